#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install the pinned stack (+ requirements-dev.txt: ruff).
# Idempotent: the venv is rebuilt only when requirements.txt changes (a hash stamp).
# Usage: bash scripts/setup_env.sh            (venv in ./.venv; override with HEADNERF_VENV=/path)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${HEADNERF_VENV:-.venv}"
PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
want="$(sha256sum requirements.txt requirements-dev.txt pyproject.toml | sha256sum | cut -c1-16)"
if [ -f "$VENV/.headnerf-stamp" ] && [ "$(cat "$VENV/.headnerf-stamp")" = "$want" ]; then
  echo "[setup] reusing $VENV (requirements unchanged)"
  exit 0
fi
echo "[setup] creating $VENV with $("$PY" --version) and installing requirements.txt (about 3 minutes)"
rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q -r requirements.txt 2>&1 | grep -v "is ignored: it is neither" || true
"$VENV/bin/pip" install -q -r requirements-dev.txt 2>&1 | grep -v "is ignored: it is neither" || true
"$VENV/bin/pip" install -q --no-deps --no-build-isolation -e . 2>&1 | grep -v "is ignored: it is neither" || true
"$VENV/bin/python" -c "import torch, pytorch3d.renderer, mediapipe, cv2, h5py, HeadNeRF; print('[setup] ok: torch', torch.__version__)"
echo "$want" > "$VENV/.headnerf-stamp"
