#!/usr/bin/env bash
# Regenerates one results table of docs/results.md from its config:
#   bash launch/results.sh TABLE [WORKROOT]
# TABLE is one of
#   digits         the default digits study (configs/digits.py)
#   cifar10        real CIFAR-10 on a CPU (configs/cifar10_cpu.py), compared
#                  with the published C-scores (set CSCORES, below)
#   cifar10_heldout the cifar10 study's workdir, then --mode=heldout: 16 cnn
#                  members on random halves, judged against the C-scores
#   cifar10n_aggre CIFAR-10N human labels, aggregate (9.0% noisy), cnn x 3
#   cifar10n_worse CIFAR-10N human labels, worst of three (40.2% noisy)
#   label_noise    Fashion-MNIST synthetic label noise over fresh noise seeds
#                  (launch/label_noise_table.sh)
#   fashion_sweeps removal and compression on Fashion-MNIST 20k
# and prints the table as Markdown (launch/results_table.py), with the commit
# and date to paste beside it. Workdirs go under WORKROOT (default
# /tmp/eh_results); a rerun resumes them. CIFAR-10 needs
# `bash launch/fetch_cifar10.sh "$CIFAR10_DIR" --cifar-n` first (default
# CIFAR10_DIR: ~/.cache/easyhard_jax/cifar10). CSCORES is the path of
# cifar10-cscores-orig-order.npz (Jiang et al. 2021, published in the public
# repository pluskid/structural-regularity under docs/cscores/; sha256
# 0f8b3e219fd37867fc1ef532335b6169f8109d137275ae53b802bb8177556ac8).
set -euo pipefail
cd "$(dirname "$0")/.."
TABLE="${1:?usage: launch/results.sh TABLE [WORKROOT]}"
ROOT="${2:-/tmp/eh_results}"
CIFAR10_DIR="${CIFAR10_DIR:-$HOME/.cache/easyhard_jax/cifar10}"
W="$ROOT/$TABLE"
[ "$TABLE" = cifar10_heldout ] && W="$ROOT/cifar10"
RUN=(python -m easyhard_jax.main)

cifar_n() {  # key
  "${RUN[@]}" --config=configs/cifar10_cpu.py --config.cifar10_dir="$CIFAR10_DIR" \
    --config.archs=cnn \
    --config.train_labels="$CIFAR10_DIR/CIFAR-10_human.pt:$1" \
    --config.train_labels_order=original --workdir="$W"
}

cifar_against_cscores() {  # mode: the study, then MODE against the C-scores
  : "${CSCORES:?set CSCORES=/path/to/cifar10-cscores-orig-order.npz}"
  echo "0f8b3e219fd37867fc1ef532335b6169f8109d137275ae53b802bb8177556ac8  $CSCORES" \
    | sha256sum -c --quiet
  "${RUN[@]}" --config=configs/cifar10_cpu.py --config.cifar10_dir="$CIFAR10_DIR" \
    --workdir="$W"
  "${RUN[@]}" --config=configs/cifar10_cpu.py --config.cifar10_dir="$CIFAR10_DIR" \
    --workdir="$W" --mode="$1" --config.reference.path="$CSCORES" \
    --config.reference.key=scores --config.reference.label_key=labels \
    --config.reference.order=original
}

case "$TABLE" in
  digits)
    "${RUN[@]}" --config=configs/digits.py --workdir="$W" ;;
  cifar10)
    cifar_against_cscores compare ;;
  cifar10_heldout)
    cifar_against_cscores heldout ;;
  cifar10n_aggre) cifar_n aggre_label ;;
  cifar10n_worse) cifar_n worse_label ;;
  label_noise)
    exec bash launch/label_noise_table.sh ;;
  fashion_sweeps)
    "${RUN[@]}" --config=configs/fashion_mnist_sweeps.py --workdir="$W" ;;
  *) echo "unknown table $TABLE" >&2; exit 2 ;;
esac
echo "<!-- $TABLE: commit $(git rev-parse --short HEAD), $(date -u +%F), $(uname -m), $(nproc) cores -->"
python launch/results_table.py "$W"
