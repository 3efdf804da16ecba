#!/usr/bin/env bash
# P processes on this machine through jax.distributed (gloo collectives on
# CPU), D forced host devices each: a rehearsal of a multi-host run. Process 0
# writes records and reports; all processes save and restore checkpoints.
# Arguments after PORT are passed on to every process's main.py.
#
#   launch/local_multiprocess.sh configs/digits.py /tmp/eh_mp [P] [D] [PORT] [--mode=records ...]
set -euo pipefail
CONFIG=${1:?config file}; WORKDIR=${2:?workdir}; shift 2
P=2; D=2; PORT=12421
for name in P D PORT; do
  if [ $# -gt 0 ] && [[ "$1" =~ ^[0-9]+$ ]]; then printf -v "$name" %s "$1"; shift; fi
done
if [ "$P" -lt 1 ] || [ "$D" -lt 1 ]; then
  echo "P and D must be >= 1, got P=$P D=$D" >&2; exit 2
fi
export XLA_FLAGS="--xla_force_host_platform_device_count=${D} ${XLA_FLAGS:-}"
pids=()
for ((i = 0; i < P; i++)); do
  python -m easyhard_jax.main --config="$CONFIG" --workdir="$WORKDIR" \
    --config.distributed.coordinator_address="127.0.0.1:${PORT}" \
    --config.distributed.num_processes="$P" \
    --config.distributed.process_id="$i" "$@" &
  pids+=($!)
done
# If one process fails, the others would wait in a collective until XLA's
# or the coordinator's timeout (minutes): stop them at once.
status=0
for _ in "${pids[@]}"; do
  rc=0
  wait -n || rc=$?
  if [ "$rc" -ne 0 ] && [ "$status" -eq 0 ]; then
    status=$rc
    echo "local_multiprocess.sh: a process exited with $rc; stopping the others" >&2
    kill "${pids[@]}" 2>/dev/null || true
  fi
done
exit $status
