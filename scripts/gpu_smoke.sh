#!/usr/bin/env bash
# The GPU smoke check (container/kolo_trainer/gpu_smoke.py does the work): PASS/FAIL per step, exit 1 on any
# FAIL, exit 2 without an NVIDIA GPU. Run it from anywhere:
#   inside the image:  docker exec kolo bash /opt/kolo/src/scripts/gpu_smoke.sh
#   in a venv:         bash scripts/gpu_smoke.sh      (.venv with the gpu, train and export extras)
#   options:           --list | --only a,b | --skip a,b | --bench | --workdir DIR | --keep
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The repository's .venv when there is one, else the python on PATH (the image's venv).
PY="${KOLO_PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; else PY="$(command -v python3 || command -v python)"; fi
fi
# kolo_trainer from the installed package, or straight from this checkout when it is not installed.
if ! "$PY" -c "import kolo_trainer" 2>/dev/null; then
  export PYTHONPATH="$ROOT/container${PYTHONPATH:+:$PYTHONPATH}"
fi
exec "$PY" -m kolo_trainer.gpu_smoke --repo "$ROOT" "$@"
