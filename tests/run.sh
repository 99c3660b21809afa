#!/usr/bin/env bash
# The test command: sets up what is missing, then runs every test (unit and end-to-end).
# Extra arguments go to pytest, e.g. `bash tests/run.sh tests/unit -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/harness/setup.sh
exec .venv/bin/python -m pytest -ra "$@"
