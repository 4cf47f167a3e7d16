#!/usr/bin/env bash
# Make the gaze estimator's synthetic set (the config's data.synthetic, written to data.dataset_dir)
# unless it is already complete; an interrupted run continues with the missing subjects.
# Usage: bash scripts/make_estimator_data.sh [CONFIG]   (default config/gaze_estimator_quickstart.yml)
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG="${1:-config/gaze_estimator_quickstart.yml}"
PY=.venv/bin/python
[ -x "$PY" ] || PY=python
exec "$PY" train_gaze_estimator.py --config_file "$CONFIG" --make_data_only
