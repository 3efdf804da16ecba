#!/usr/bin/env bash
# The prepared GPU check (issue 13): <= 8 minutes on one H100/H200; writes
# device_check.json and device_check.md to $OUT (or /tmp/device_check).
#
#   launch/fetch_wheels.sh          # here, with network (once)
#   launch/device_check.sh          # on the GPU machine, no network
#   launch/device_check.sh --dry-run   # anywhere: CPU, toy sizes (CI)
#
# The GPU image (Python 3.12, jax CUDA, flax, optax, orbax, chex, absl,
# numpy, torch) lacks ml-collections and tensorboardX: they are installed
# from the carried launch/wheels/ when missing. Nothing else is installed
# and nothing is downloaded; TFDS and grain are never imported.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/device_check}"
python="${PYTHON:-python}"

# Missing pure-Python packages go to a private folder (no change to the
# image's site-packages, no PEP 668 trouble).
site="${TMPDIR:-/tmp}/eh_device_check_site"
wheels=()
"$python" -c 'import ml_collections' 2>/dev/null || wheels+=(launch/wheels/ml_collections-*.whl)
"$python" -c 'import tensorboardX' 2>/dev/null || wheels+=(launch/wheels/tensorboardx-*.whl)
for w in "${wheels[@]}"; do
  if [ ! -f "$w" ]; then
    echo "missing $w: run launch/fetch_wheels.sh first and carry launch/wheels" >&2
    exit 2
  fi
done
if [ ${#wheels[@]} -gt 0 ]; then
  "$python" -m pip install -q --no-index --no-deps --target "$site" "${wheels[@]}"
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi

# The library is imported from the tree (no pip install -e needed).
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" -m benchmarks.device_check --out "$out" "$@"
