#!/usr/bin/env bash
# The quickstart: set up, make the synthetic dataset, train config/quickstart.yml, report.
# Usage: bash scripts/quickstart.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
PY=.venv/bin/python
DATA=data/synthetic
if [ ! -f "$DATA/split.json" ]; then
  $PY DataProcess/make_synthetic_dataset.py --save_dir "$DATA" --num_subjects 4 --num_cameras 8 \
      --num_frames 24 --image_size 64 --seed 0
else
  echo "[quickstart] reusing the synthetic dataset in $DATA"
fi
RUN="runs/quickstart_$(date +%Y%m%d_%H%M%S)"
$PY train_headnerf.py --config_file config/quickstart.yml --run_dir "$RUN"
echo
echo "[quickstart] outputs:"
echo "  dataset + preview grid : $DATA/ ($DATA/preview.png)"
echo "  trained model          : $RUN/checkpoints/last.pt"
echo "  report (PSNR, gaze)    : $RUN/report.json"
echo "  tensorboard            : .venv/bin/tensorboard --logdir $RUN/tb"
echo "  next                   : bash scripts/evaluate_quickstart.sh $RUN   (gaze estimator + evaluation, 7-25 min by machine)"
echo "                           .venv/bin/python FittingSingleImage.py --model_path $RUN --img PHOTO --save_root out/"
