"""Benchmarks: throughput of the train step, the scale-out and the analysis.

Run from the repository root (they read ``configs/`` as the launcher does):

  python -m benchmarks.train_step [--peer=torch]   # member strategies, peer
  python -m benchmarks.scale --part=devices|loader # devices, streamed loader
  python -m benchmarks.analysis_kernels [--quick]  # jitted analysis kernels
  launch/device_check.sh [--dry-run]               # the prepared GPU check

They live outside the library so that ``easyhard_jax`` never imports
``configs``.
"""
