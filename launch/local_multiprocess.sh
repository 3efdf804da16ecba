#!/usr/bin/env bash
# P processes on this machine through jax.distributed (gloo collectives on
# CPU), D forced host devices each: a rehearsal of a multi-host run. Process 0
# writes records and reports; all processes save and restore checkpoints.
#
#   launch/local_multiprocess.sh configs/digits.py /tmp/eh_mp [P] [D] [PORT]
set -euo pipefail
CONFIG=${1:?config file}; WORKDIR=${2:?workdir}; P=${3:-2}; D=${4:-2}; PORT=${5:-12421}
export XLA_FLAGS="--xla_force_host_platform_device_count=${D}"
pids=()
for ((i = 0; i < P; i++)); do
  python -m easyhard_jax.main --config="$CONFIG" --workdir="$WORKDIR" \
    --config.distributed.coordinator_address="127.0.0.1:${PORT}" \
    --config.distributed.num_processes="$P" \
    --config.distributed.process_id="$i" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
