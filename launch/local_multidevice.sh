#!/usr/bin/env bash
# One process, N devices. On a CPU machine, N forced host devices split every
# batch N ways (they share the machine's cores: this tests sharding, it does
# not speed it up); on a GPU/TPU host all local accelerators are used
# automatically (config.mesh_shape='auto'). With forced host devices the
# program runs one sharded step at a time and XLA:CPU's collective timeout is
# raised (easyhard_jax/train/mesh.py, easyhard_jax/distributed.py).
#
#   launch/local_multidevice.sh configs/digits.py /tmp/eh_digits [N] [--mode=records ...]
set -euo pipefail
CONFIG=${1:?config file}; WORKDIR=${2:?workdir}; shift 2
N=8
if [ $# -gt 0 ] && [[ "$1" =~ ^[0-9]+$ ]]; then N=$1; shift; fi
if [ "$N" -lt 1 ]; then echo "N must be >= 1, got $N" >&2; exit 2; fi
if [ "$(python -c 'import jax; print(jax.default_backend())' 2>/dev/null)" = cpu ]; then
  export XLA_FLAGS="--xla_force_host_platform_device_count=${N} ${XLA_FLAGS:-}"
fi
exec python -m easyhard_jax.main --config="$CONFIG" --workdir="$WORKDIR" "$@"
