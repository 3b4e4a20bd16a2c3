#!/usr/bin/env bash
# Build the bundle verify_cuda.sh and conformance_cuda.sh need on the GPU host (which has no network):
# platformdirs, the one llmcompare dependency its image lacks. llmcompare itself is installed there from
# the working tree (editable, setup.sh's install_llmcompare): a wheel of it would miss subpackages
# which pyproject.toml's package list does not name.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
rm -rf .whl && mkdir .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 -d .whl platformdirs
ls -la .whl
