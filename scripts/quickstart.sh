#!/usr/bin/env bash
# The quickstart: set up, make the synthetic dataset, train config/quickstart.yml, report.
# Usage: bash scripts/quickstart.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
PY=.venv/bin/python
DATA=data/synthetic
# The dataset's recipe is stamped beside it: a dataset of an earlier recipe (24 frames per subject before
# session 25) is remade, not silently reused with a config tuned for another.
RECIPE="--num_subjects 4 --num_cameras 8 --num_frames 48 --image_size 64 --seed 0"
if [ -f "$DATA/split.json" ] && [ "$(cat "$DATA/recipe.txt" 2>/dev/null)" = "$RECIPE" ]; then
  echo "[quickstart] reusing the synthetic dataset in $DATA"
else
  [ -f "$DATA/split.json" ] && echo "[quickstart] $DATA was made with another recipe: making it again ($RECIPE)"
  # shellcheck disable=SC2086  # the recipe is a list of flags
  $PY DataProcess/make_synthetic_dataset.py --save_dir "$DATA" $RECIPE
  echo "$RECIPE" > "$DATA/recipe.txt"
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
