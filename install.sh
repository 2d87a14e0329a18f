#!/usr/bin/env bash
# Install curate and everything it needs on Debian (Python 3.11), then run the demo or the tests.
#   bash install.sh demo   # install, then: curate run pipelines/openclipart_demo.yaml
#   bash install.sh test   # install, then: the test suite
# Environment: CURATE_VENV (default .venv); CURATE_VENV_ISOLATED=1 builds the venv without the
# system site-packages (a truly fresh install; slower: torch alone is several GB).
set -euo pipefail
cd "$(dirname "$0")"
what="${1:-}"
case "$what" in demo|test|install) ;; *) echo "usage: bash install.sh demo|test|install" >&2; exit 2 ;; esac

sudo_if_needed() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian packages: the openclipart demo pool, WordNet 3.0 for the text_based filter (+ python3-venv
# where missing).
debs=(openclipart-png openclipart-svg wordnet-base wordnet-sense-index)
debs+=(protobuf-compiler libprotobuf-dev)  # gcld3 (the laion2b filter's language ID) builds against them
if [ "$what" = test ]; then debs+=(chromium); fi  # the report test renders the page in headless Chromium
python3 -c "import venv, ensurepip" 2>/dev/null || debs+=(python3-venv)
missing=()
for p in "${debs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

venv="${CURATE_VENV:-.venv}"
if [ ! -x "$venv/bin/python" ]; then
  if [ "${CURATE_VENV_ISOLATED:-0}" = 1 ]; then python3 -m venv "$venv"
  else python3 -m venv --system-site-packages "$venv"; fi
fi
"$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
"$venv/bin/python" -m pip install -q -e ".[dev,laion2b]"  # gcld3 builds from source (~45 s)

export NO_ALBUMENTATIONS_UPDATE=1 RAY_AUTH_MODE=disabled
case "$what" in
  demo) exec "$venv/bin/curate" run pipelines/openclipart_demo.yaml ;;
  test) exec "$venv/bin/python" -m pytest -q -p no:cacheprovider tests ;;
  install) echo "installed: $venv/bin/curate" ;;
esac
