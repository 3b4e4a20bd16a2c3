#!/usr/bin/env bash
# On a GPU host with no network: reassemble the packs that arrived in parts, build each backend's
# environment from its pack, and run a study. Each step is an llmcompare command (docs/offline.md).
#
#   benchmarks/gpu/offline-host.sh INBOX STUDY.yaml [STUDY_DIR [STUDY RUN FLAGS...]]
#
# Flags after STUDY_DIR go to `llmcompare study run`, e.g. --only hardware=h100 --only backend=llamacpp:f16.
# INBOX holds what was carried in: packs split into parts (NAME.tar.part-00, NAME.tar.part-01, ...: a
# pack folder made by `llmcompare env pack NAME -O NAME`, tarred and cut with `split -b 55M -d`), or
# pack folders themselves (INBOX/NAME/pack.json). The parts of a pack are joined once all of them are
# there; a pack whose environment is built already is skipped (env create --from checks its pack.json).
# The environment of MAIN_PACK (default: transformers, else the first pack) runs the study; the other
# backends run in their own environments. Run the script again with the same arguments to go on where
# it stopped: the study resumes its cells, and the conversions (its steps) resume too.
#
# Variables: PYTHON (default python3, the host's Python with its torch), LLMCOMPARE_CACHE_DIR (default
# /tmp/llmcompare-cache: environments, conversions), STUDY_TIME_LIMIT (seconds: the study gets SIGTERM
# then, keeping every finished request, so that the script ends before a scheduler's limit).
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,10p' "$0"; exit 2; }
inbox=$(realpath "$1") study=$(realpath "$2") out=${3:-runs/$(basename "$2" .yaml)}
shift $(( $# < 3 ? $# : 3 ))
py=${PYTHON:-python3}
export LLMCOMPARE_CACHE_DIR=${LLMCOMPARE_CACHE_DIR:-/tmp/llmcompare-cache}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PIP_NO_INDEX=1
# CTranslate2's CUDA 12 wheel through cuBLAS 13 (opt-in), the ExLlamas' extensions for H100/H200, and
# NVLink multicast off for the two-GPU cells (docs/results.md)
export LLMCOMPARE_CUBLAS12_ALIAS=${LLMCOMPARE_CUBLAS12_ALIAS:-1} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
say() { echo "[offline-host $(date -u +%H:%M:%S)] $*"; }

# 1. join the parts of each pack (cat in name order: part-00, part-01, ...)
for first in "$inbox"/*.tar.part-00; do
  [ -e "$first" ] || continue
  name=$(basename "$first" .tar.part-00)
  [ -f "$inbox/$name/pack.json" ] && continue
  say "joining $(ls "$inbox/$name".tar.part-* | wc -l) parts of $name"
  cat "$inbox/$name".tar.part-* | tar -xf - -C "$inbox"
done
packs=()
for manifest in "$inbox"/*/pack.json; do [ -e "$manifest" ] && packs+=("$(dirname "$manifest")"); done
[ ${#packs[@]} -gt 0 ] || { say "no pack in $inbox (NAME/pack.json or NAME.tar.part-00 ...)"; exit 2; }
backend_of() { "$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))["backend"])' "$1/pack.json"; }

# 2. llmcompare itself, once, to build the environments (a venv that sees the host's packages)
boot=$LLMCOMPARE_CACHE_DIR/boot
if [ ! -e "$boot/.installed" ]; then
  say "installing llmcompare from ${packs[0]} into $boot"
  "$py" -m venv --system-site-packages "$boot"
  # A host Python that is itself a virtual environment (torch in /opt/…/.venv): a venv made from it sees
  # the base interpreter's packages only, so the host venv's site-packages join through a .pth file.
  "$py" -c 'import site, sys; sys.prefix != sys.base_prefix and print("\n".join(site.getsitepackages()))' \
    > "$("$boot/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/llmcompare-host.pth"
  "$boot/bin/python" -m pip install -q --no-index --find-links "${packs[0]}" --ignore-installed --no-deps \
    "${packs[0]}"/llmcompare-*.whl
  "$boot/bin/python" -m pip install -q --no-index --find-links "${packs[0]}" llmcompare
  touch "$boot/.installed"
fi

# 3. each pack's environment (sha256 of every file checked first; nothing to do when already built)
main=
for dir in "${packs[@]}"; do
  name=$(backend_of "$dir")
  say "environment $name from $dir"
  "$boot/bin/python" -m llmcompare env create "$name" --from "$dir" -q
  if [ "$name" = "${MAIN_PACK:-transformers}" ] || [ -z "$main" ]; then
    main=$LLMCOMPARE_CACHE_DIR/envs/$name/bin/python
  fi
done

# 4. the study, with the main environment's llmcompare
say "study $study in $out (python: $main)"
run=("$main" -m llmcompare.study run "$study" -O "$out" "$@")
if [ -n "${STUDY_TIME_LIMIT:-}" ]; then
  timeout --signal=TERM --kill-after=150 "$STUDY_TIME_LIMIT" "${run[@]}" || { rc=$?; say "study stopped (status $rc): run this again to go on"; exit "$rc"; }
else
  "${run[@]}"
fi
