#!/bin/bash
# Label-error detection on fresh noise: every score at one window, mean +- sd.
#
#   launch/label_noise_table.sh [OUT_DIR]        (default /tmp/eh_label_noise)
#
# Records configs/fashion_mnist_label_noise.py (first 20,000 Fashion-MNIST
# train examples, 5% flipped) at the noise seeds $SEEDS (default 1 2 3), and
# once more on another 20k slice (train examples 20,000-39,999, written as an
# npz) at noise seed $SLICE_SEED (default 4); then prints, per setting, every
# score's AUROC and precision at k on the same records at the same window
# (epochs (1, $EPOCHS]; launch/label_noise_table.py). Workdirs that already
# hold finished records are not retrained (the records stage resumes).
# Smaller than the recipe, to fit 60 minutes on 2 CPU cores shared with other
# jobs: $EPOCHS epochs (default 3, not 8), the CNN at $WIDTH (default 0.25,
# not 0.5) and probes at whole epochs only (the first epoch's extra probes
# lie outside the window). Runs one at a time, niced.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/eh_label_noise}
EPOCHS=${EPOCHS:-3}
WIDTH=${WIDTH:-0.25}
SEEDS=${SEEDS:-"1 2 3"}
SLICE_SEED=${SLICE_SEED:-4}
CFG=configs/fashion_mnist_label_noise.py
mkdir -p "$OUT"
record() {  # WORKDIR, then config overrides.
  local wd=$1; shift
  nice -n 19 python -m easyhard_jax.main --config="$CFG" --mode=records \
      --config.epochs="$EPOCHS" --config.width="$WIDTH" \
      --config.probe.first_epoch_fractions='()' \
      "$@" --workdir="$wd" > "$wd.log" 2>&1 \
      || { echo "record failed: see $wd.log" >&2; exit 1; }
}
for s in $SEEDS; do
  echo "recording first 20k, noise seed $s -> $OUT/first20k_seed$s" >&2
  record "$OUT/first20k_seed$s" --config.label_noise.seed="$s"
done
SLICE=$OUT/fashion_mnist_20000_40000.npz
[ -f "$SLICE" ] || nice -n 19 python launch/label_noise_table.py \
    --make_slice="$SLICE" --slice_start=20000 --slice_stop=40000
echo "recording examples 20000-39999, noise seed $SLICE_SEED" >&2
record "$OUT/next20k_seed$SLICE_SEED" --config.dataset=npz \
    --config.npz_path="$SLICE" --config.max_train_examples=0 \
    --config.label_noise.seed="$SLICE_SEED"
WORKDIRS=$(for s in $SEEDS; do printf 'first 20k=%s,' "$OUT/first20k_seed$s"; done)
nice -n 19 python launch/label_noise_table.py --window=1,"$EPOCHS" \
    --runs="${WORKDIRS}other 20k=$OUT/next20k_seed$SLICE_SEED" \
    --json="$OUT/table.json"
