#!/usr/bin/env bash
# One process, N devices. On a CPU machine, N forced host devices split every
# batch N ways (XLA:CPU runs them in parallel); on a GPU/TPU host all local
# accelerators are used automatically (config.mesh_shape='auto').
#
#   launch/local_multidevice.sh configs/digits.py /tmp/eh_digits [N] [--mode=record ...]
set -euo pipefail
CONFIG=${1:?config file}; WORKDIR=${2:?workdir}; N=${3:-8}; shift $(( $# < 3 ? $# : 3 ))
if [ "$(python -c 'import jax; print(jax.default_backend())' 2>/dev/null)" = cpu ]; then
  export XLA_FLAGS="--xla_force_host_platform_device_count=${N} ${XLA_FLAGS:-}"
fi
exec python -m easyhard_jax.main --config="$CONFIG" --workdir="$WORKDIR" "$@"
