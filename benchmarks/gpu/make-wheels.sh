#!/usr/bin/env bash
# Build what verify_cuda.sh carries to the GPU machine (which has no network): llmcompare itself
# and platformdirs, the one dependency its image lacks. Everything else is already there.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
rm -rf .whl && mkdir .whl
python3 -m pip wheel -q --no-deps -w .whl .
python3 -m pip download -q --no-deps --only-binary=:all: -d .whl platformdirs
ls -la .whl
