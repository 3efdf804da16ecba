#!/usr/bin/env bash
# Cloud TPU pod slice: the same command on every worker; jax.distributed
# detects the pod from the TPU environment. The workdir must be shared
# (e.g. a gs:// bucket via a FUSE mount or a shared filesystem).
#
#   launch/tpu_pod.sh TPU_NAME ZONE configs/imagenet.py /mnt/shared/eh_imagenet
set -euo pipefail
TPU=${1:?tpu name}; ZONE=${2:?zone}; CONFIG=${3:?config}; WORKDIR=${4:?workdir}
gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=all --command="
  cd ~/easyhard_jax && pip install -q -e . &&
  python -m easyhard_jax.main --config=$CONFIG --workdir=$WORKDIR"
