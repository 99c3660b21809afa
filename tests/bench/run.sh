#!/usr/bin/env bash
# The S3 benchmark: `bash tests/bench/run.sh [--sizes 256,1024,4096] [--kinds random,compressible]
# [--json PATH]` (tests/bench/s3_migration.py says what it measures). Sets up what is missing first.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash tests/harness/setup.sh
bash tests/harness/build-images.sh bench
exec .venv/bin/python -m tests.bench.s3_migration "$@"
