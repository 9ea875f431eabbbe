#!/usr/bin/env bash
# The project's two entry points; each bootstraps .venv from uv.lock when missing.
#   ./run.sh pipeline   the whole DVC pipeline (dvc repro) on the embedded demo corpus
#   ./run.sh test       the test suite
# Anything else runs inside the environment: ./run.sh mlflow ui, ./run.sh dvc exp show
set -euo pipefail
cd "$(dirname "$0")"

bootstrap() {
  if [ ! -x .tools/bin/uv ]; then
    python3 -m venv .tools
    .tools/bin/pip install --quiet --disable-pip-version-check uv==0.13.8
  fi
  if [ ! -x .venv/bin/dvc ] || [ uv.lock -nt .venv/.synced ]; then
    .tools/bin/uv sync --frozen --quiet --compile-bytecode
    touch .venv/.synced
  fi
  export PATH="$PWD/.venv/bin:$PATH"
}

test_tools() {
  # sox is the front end's oracle, chromium the MLflow UI's browser; tests skip without them
  if { ! command -v sox >/dev/null || [ ! -x /usr/bin/chromium ]; } && command -v apt-get >/dev/null \
      && [ "$(id -u)" = 0 ]; then
    apt-get update -qq >/dev/null && apt-get install -y -qq sox chromium >/dev/null || true
  fi
}

bootstrap
case "${1:-}" in
  pipeline) shift; exec dvc repro "$@" ;;
  # two processes (pytest-xdist); a shared session fixture's tests stay on one (tests/conftest.py)
  test) shift; test_tools; exec python -m pytest -n 2 "$@" ;;
  "") echo "usage: ./run.sh pipeline | test | <command in the environment>" >&2; exit 2 ;;
  *) exec "$@" ;;
esac
