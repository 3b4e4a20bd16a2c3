#!/usr/bin/env bash
# Build the bundle of the llama.cpp-on-CUDA steps (g1-llamacpp-build.sh, g2-llamacpp-bench.sh): one folder,
#   .gpucarryG/  llama_cpp_python-0.3.36.tar.gz: llama-cpp-python's source package, stripped. The PyPI
#                sdist is 76.6 MB, over the 64 MiB of one transfer; what its build does not read goes: the
#                packaging repository's .git (39 MB, the vendored llama.cpp's submodule history), llama.cpp's
#                models/ (vocabulary GGUFs for its tests, 76 MB unpacked), docs/, media/, tests/, examples/,
#                benches/, its web UI and every tool but tools/mtmd (llama-cpp-python adds that directory by
#                path), and CI and editor files. The license files stay. STRIPPED.txt inside names the
#                vendored llama.cpp commit (read from the .git that is dropped) and what was removed.
#                lcsnap.tgz + whl/: platformdirs, rapidfuzz (llmcompare's own needs), and what llama_cpp,
#                llama_cpp.server and gguf import that the image lacks, or has at a version too old for
#                these: diskcache; fastapi, starlette, uvicorn, sse-starlette, starlette-context,
#                pydantic, pydantic-core, pydantic-settings, annotated-types, typing-inspection,
#                python-dotenv, opentelemetry-api (fastapi 0.165 requires it); typing-extensions 4.16 and
#                anyio 4.16 (pydantic and anyio ask typing-extensions >= 4.16, sse-starlette anyio >= 4.7);
#                gguf 0.19 (llmcompare.models.quantize gguf). The image already has numpy, jinja2, pyyaml, click,
#                h11, idna, annotated-doc, requests, tqdm, and cmake, ninja, scikit-build-core for the build.
# lcsnap.tgz: the package at commit BASE (default HEAD), as in make-carry-d.sh. The folder must be ignored
# (.git/info/exclude); never commit it. Set SDIST=path to reuse a downloaded source package (its sha256 is
# checked either way).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
git check-ignore -q .gpucarryG/x || { echo "add /.gpucarryG/ to .git/info/exclude first" >&2; exit 2; }
LCP=llama_cpp_python-0.3.36
LCP_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
source benchmarks/gpu/carry-lib.sh
rm -rf .gpucarryG && mkdir -p .gpucarryG/whl
snapshot .gpucarryG/lcsnap.tgz

get .gpucarryG/whl platformdirs==4.14.7 rapidfuzz==3.14.6 diskcache==5.6.3 fastapi==0.165.0 starlette==1.10.0 \
    uvicorn==0.54.0 sse-starlette==3.7.0 starlette-context==0.3.6 pydantic==2.14.3 pydantic-core==2.50.4 \
    pydantic-settings==2.14.1 annotated-types==0.8.0 typing-inspection==0.4.5 python-dotenv==1.2.4 \
    opentelemetry-api==1.45.2 typing-extensions==4.16.0 anyio==4.16.0 gguf==0.19.0

# The source package: download (or reuse SDIST), check, strip, repack under its own top-level name.
work=$(mktemp -d)
sdist=${SDIST:-}
if [ -z "$sdist" ]; then
  python3 -m pip download -q --no-deps --no-binary=:all: -d "$work" llama-cpp-python==0.3.36
  sdist=$work/$LCP.tar.gz
fi
echo "$LCP_SHA256  $sdist" | sha256sum -c --quiet
tar -xzf "$sdist" -C "$work"
src=$work/$LCP
commit=$(git --git-dir="$src/.git/modules/vendor/llama.cpp" rev-parse HEAD)
DROP_TOP=(.git .github .gitmodules .dockerignore .readthedocs.yaml docker docs examples scripts tests mkdocs.yml
          Makefile CHANGELOG.md CONTRIBUTING.md)
DROP_LLAMA=(.git .github .devops .gemini .pi .gitmodules .clang-format .clang-tidy .dockerignore .ecrc .editorconfig
            .flake8 .pre-commit-config.yaml AGENTS.md CLAUDE.md CODEOWNERS CONTRIBUTING.md SECURITY.md
            app benches ci docs examples media models pocs requirements requirements.txt scripts skills tests
            grammars flake.nix build-xcframework.sh convert_hf_to_gguf.py convert_hf_to_gguf_update.py
            convert_llama_ggml_to_gguf.py convert_lora_to_gguf.py conversion gguf-py
            tools/mtmd/test-1.jpeg tools/mtmd/test-2.mp3 tools/mtmd/test-3.mp4 tools/mtmd/tests tools/mtmd/tests.sh)
(cd "$src" && rm -rf "${DROP_TOP[@]}")
(cd "$src/vendor/llama.cpp" && rm -rf "${DROP_LLAMA[@]}" \
  && find tools -mindepth 1 -maxdepth 1 ! -name mtmd -exec rm -rf {} +)
{ echo "llama-cpp-python 0.3.36 source package (sha256 $LCP_SHA256), stripped by benchmarks/gpu/make-carry-g.sh"
  echo "vendored llama.cpp commit $commit"
  echo "removed from the top: ${DROP_TOP[*]}"
  echo "removed from vendor/llama.cpp: ${DROP_LLAMA[*]}, tools/* but tools/mtmd"; } > "$src/STRIPPED.txt"
tar --sort=name --mtime="2022-11-09 00:00Z" --owner=0 --group=0 --numeric-owner -C "$work" -cf - "$LCP" \
  | gzip -9n > ".gpucarryG/$LCP.tar.gz"   # the same bytes from the same source package
rm -rf "$work"

tar -xzOf .gpucarryG/lcsnap.tgz ./LLMCOMPARE_SNAPSHOT
tar -xzOf ".gpucarryG/$LCP.tar.gz" "$LCP/STRIPPED.txt" | head -2
du -b .gpucarryG/*.tgz .gpucarryG/*.tar.gz .gpucarryG/whl/* | sort -n
echo "total: $(du -sb .gpucarryG | cut -f1) bytes in the bundle; working tree that travels: $(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1) bytes"
