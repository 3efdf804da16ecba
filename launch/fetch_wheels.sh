#!/usr/bin/env bash
# Downloads, into launch/wheels/ (git-ignored), the wheels that the GPU
# machine's image lacks and the device check imports: ml-collections (the
# configs) and tensorboardX (the study's metrics writer). Both are pure
# Python (~0.2 MB together); the image already has their dependencies
# (PyYAML via flax, protobuf via orbax/tensorboard, packaging, absl-py, numpy).
# Run it here, with network, before carrying the tree to the GPU machine:
#
#   launch/fetch_wheels.sh && du -sh launch/wheels
#
# The versions are the ones the project is tested with.
set -euo pipefail
cd "$(dirname "$0")"
pip download --only-binary=:all: --python-version 3.12 \
  --platform manylinux2014_x86_64 --no-deps -d wheels \
  ml-collections==1.1.0 tensorboardX==2.6.5
du -sh wheels
