#!/usr/bin/env bash
# Cloud TPU pod slice: the same command on every worker; jax.distributed
# detects the pod from the TPU environment. Each worker streams its share of
# every global batch (config.stream.enabled). The workdir is a bucket
# (gs://BUCKET/DIR: every stage writes through etils.epath, see
# docs/workdir.md) or a shared POSIX filesystem (NFS, Filestore) mounted at
# the same path on every worker: all workers save and restore checkpoints
# there. The TFDS data_dir must be shared too. Extra arguments are passed on
# to main.py, each quoted for the workers' shell (spaces and shell characters
# arrive unchanged).
#
#   launch/tpu_pod.sh TPU_NAME ZONE configs/imagenet.py /mnt/shared/eh_imagenet \
#       --config.data_dir=/mnt/shared/tfds
set -euo pipefail
TPU=${1:?tpu name}; ZONE=${2:?zone}; CONFIG=${3:?config}; WORKDIR=${4:?workdir}
shift 4
# One string for the remote shell: every argument quoted with printf %q.
ARGS=$(printf ' %q' --config="$CONFIG" --workdir="$WORKDIR" "$@")
gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=all \
  --command="cd ~/easyhard_jax && pip install -q -e . && python -m easyhard_jax.main${ARGS}"
