# Sourced by c1-bnb.sh and c2-exllama.sh on the GPU host (repository root as cwd): setup.sh's
# environment and functions, plus install_carry, which installs a bundle folder of make-carry-c.sh.
source benchmarks/gpu/setup.sh

install_carry() {  # CARRY: unpack CARRY/whl/*.whl into /tmp/site, then install CARRY/lcsnap.tgz (editable)
  local carry=$1
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$carry"/whl/*.whl || return 1
  say "wheels in /tmp/site: $(cd "$carry/whl" && ls | tr '\n' ' ')"
  # setup.sh's install_llmcompare looks for the snapshot (and platformdirs) under .whl/: lay them out there
  mkdir -p .whl && cp "$carry"/lcsnap.tgz "$carry"/whl/platformdirs-*.whl .whl/
  install_llmcompare
}
