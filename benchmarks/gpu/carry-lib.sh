# Sourced by make-carry-d.sh and make-carry-g.sh (run on a networked build machine, never on the GPU host):
# what every bundle needs.
#   get DIR NAME==VER...   cp312 manylinux wheels for the GPU machine's Python 3.12, no dependencies
#   snapshot FILE          the llmcompare package at commit BASE (default HEAD) as a .tgz, with
#                          LLMCOMPARE_SNAPSHOT naming the commit (setup.sh installs it instead of the tree)
PLAT=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
      --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
get() { python3 -m pip download -q --no-deps "${PLAT[@]}" -d "$@"; }

snapshot() {
  local out=$1 snap base
  snap=$(mktemp -d)
  base=$(git rev-parse "${BASE:-HEAD}")
  git archive "$base" llmcompare backends prompts pyproject.toml README.md | tar -x -C "$snap"
  echo "base $base" > "$snap/LLMCOMPARE_SNAPSHOT"
  tar -czf "$out" -C "$snap" . && rm -rf "$snap"
}
