#!/usr/bin/env bash
# Evaluate the quickstart model with the GazeNeRF protocol on the synthetic test subject(s):
#   1. make the gaze estimator's synthetic set (skipped when complete),
#   2. train the estimator with config/gaze_estimator_quickstart.yml (continued or reused when done),
#   3. run Evaluation.py with config/quickstart_evaluation.yml (continues where a killed run stopped).
# Usage: bash scripts/evaluate_quickstart.sh [RUN_DIR]
#   RUN_DIR: the trained NeRF (default: runs/quickstart, else the newest runs/quickstart_* from scripts/quickstart.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || PY=python
RUN="${1:-}"
if [ -z "$RUN" ]; then
  if [ -f runs/quickstart/checkpoints/last.pt ]; then
    RUN=runs/quickstart
  else
    RUN=$(ls -1dt runs/quickstart_*/ 2>/dev/null | while read -r d; do
            [ -f "$d/checkpoints/last.pt" ] && { echo "${d%/}"; break; }; done || true)
  fi
fi
if [ -z "$RUN" ] || [ ! -f "$RUN/checkpoints/last.pt" ]; then
  echo "evaluate_quickstart.sh: error: no trained quickstart model (${RUN:-runs/quickstart}/checkpoints/last.pt); run bash scripts/quickstart.sh first, or pass its run dir" >&2
  exit 2
fi
START=$(date +%s)
echo "[evaluate_quickstart] 1/3 estimator data (config/gaze_estimator_quickstart.yml)"
bash scripts/make_estimator_data.sh config/gaze_estimator_quickstart.yml
echo "[evaluate_quickstart] 2/3 estimator training (reused when finished)"
"$PY" train_gaze_estimator.py --config_file config/gaze_estimator_quickstart.yml --auto_resume
echo "[evaluate_quickstart] 3/3 evaluation of $RUN"
RESULTS="runs/evaluation_$(basename "$RUN")"
"$PY" Evaluation.py --config_file_path config/quickstart_evaluation.yml --checkpoint "$RUN" --results_dir "$RESULTS"
echo
echo "[evaluate_quickstart] done in $(( $(date +%s) - START )) s:"
echo "  report        : $RESULTS/report.md"
echo "  all numbers   : $RESULTS/metrics.json (per pair: $RESULTS/per_pair.jsonl)"
echo "  figures       : $RESULTS/grid.png, $RESULTS/gaze_error_vs_redirection.png, $RESULTS/controllability.png"
