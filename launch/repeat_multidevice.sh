#!/usr/bin/env bash
# Runs a config's record stage N times with forced host devices (the CPU
# rehearsal of a sharded run, as launch/local_multidevice.sh does), each in a
# fresh workdir with its own empty compilation cache, and prints a table:
# exit code, wall time, XLA collective stall warnings (a device >= 20 s late
# to a rendezvous) and whether the records match run 1's.
#
#   launch/repeat_multidevice.sh [RUNS=3] [--config=configs/digits.py]
#       [--devices=8] [--root=DIR] [--config.field=value ...]
#
# Quick check: launch/repeat_multidevice.sh 2 --config=configs/digits_quick.py
# Records match when the probe schedule is equal, losses (probe and fused)
# agree within 1e-4 and correctness differs only where the margin is within
# 1e-4 of a tie (the rule of tests/conftest.py's assert_same_records);
# "identical" means bit-equal.
set -euo pipefail
RUNS=3; CONFIG=configs/digits.py; DEVICES=8; ROOT=""; EXTRA=()
for arg in "$@"; do
  case "$arg" in
    --config=*) CONFIG="${arg#--config=}" ;;
    --devices=*) DEVICES="${arg#--devices=}" ;;
    --root=*) ROOT="${arg#--root=}" ;;
    --config.*) EXTRA+=("$arg") ;;
    [0-9]*) RUNS="$arg" ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
ROOT=${ROOT:-$(mktemp -d "${TMPDIR:-/tmp}/eh_repeat.XXXXXX")}
mkdir -p "$ROOT"
export XLA_FLAGS="--xla_force_host_platform_device_count=${DEVICES} ${XLA_FLAGS:-}"
echo "config=$CONFIG devices=$DEVICES runs=$RUNS root=$ROOT"
echo "XLA_FLAGS=$XLA_FLAGS"
declare -a RC WALL STALLS
for i in $(seq 1 "$RUNS"); do
  work="$ROOT/run$i"
  if [ -e "$work" ]; then echo "$work exists: use a new --root" >&2; exit 2; fi
  start=$(date +%s.%N)
  set +e
  python -m easyhard_jax.main --config="$CONFIG" --workdir="$work" \
    --mode=records --config.compilation_cache_dir="$work/xla_cache" \
    ${EXTRA[@]+"${EXTRA[@]}"} >"$ROOT/run$i.log" 2>&1
  RC[$i]=$?
  set -e
  WALL[$i]=$(python -c "import time; print(f'{time.time() - $start:.0f}')")
  STALLS[$i]=$(grep -c "may be stuck" "$ROOT/run$i.log" || true)
  echo "run $i: exit ${RC[$i]}, ${WALL[$i]} s (log: $ROOT/run$i.log)"
done
printf '\n| run | exit | wall (s) | stall warnings | records vs run 1 |\n'
printf '|---|---|---|---|---|\n'
for i in $(seq 1 "$RUNS"); do
  match=$(python - "$ROOT/run1" "$ROOT/run$i" "${RC[1]}" "${RC[$i]}" <<'EOF'
import sys
import numpy as np
from easyhard_jax.storage import records
ref, other, rc_ref, rc = sys.argv[1:]
if rc != '0' or rc_ref != '0':
  print('n/a (run failed)')
  sys.exit()
tol, identical = 1e-4, True
try:
  for split, source in (('train', 'probe'), ('test', 'probe'),
                        ('train', 'fused')):
    a = records.load(ref, split, source)
    b = records.load(other, split, source)
    np.testing.assert_array_equal(a.probe_steps, b.probe_steps)
    np.testing.assert_allclose(a.loss, b.loss, rtol=tol, atol=tol)
    flips = a.correct != b.correct
    assert not (flips & (np.abs(a.margin) > tol)).any(), 'correctness'
    identical &= all(np.array_equal(
        getattr(a, f), getattr(b, f),
        equal_nan=getattr(a, f).dtype.kind == 'f') for f in records.FIELDS)
  print('identical' if identical else 'match (1e-4)')
except (AssertionError, ValueError, OSError) as e:
  print('DIFFER: ' + str(e).strip().splitlines()[0][:60])
EOF
)
  printf '| %s | %s | %s | %s | %s |\n' "$i" "${RC[$i]}" "${WALL[$i]}" \
    "${STALLS[$i]}" "$match"
done
