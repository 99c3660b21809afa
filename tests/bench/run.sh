#!/usr/bin/env bash
# The S3 benchmark: `bash tests/bench/run.sh [MIB]` (default 1024). Sets up what is missing first.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash tests/harness/setup.sh
bash tests/harness/build-images.sh bench
exec .venv/bin/python -m tests.bench.s3_migration "$@"
