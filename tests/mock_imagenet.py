"""Runs configs/imagenet.py shrunk to seconds on tfds.testing.mock_data.

  python tests/mock_imagenet.py WORKDIR MODE [EPOCHS]

Used by test_streaming.py in-process and as a subprocess (to be killed).
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

NUM_EXAMPLES = 48  # Per split; mock images have random sizes.


def tiny_config(workdir: str, epochs: int = 2):
  """The ImageNet config at 16 px with a 1/16-width ImageNet ResNet-18."""
  from configs import imagenet
  c = imagenet.get_config()
  c.image_size = 16
  c.width = 0.0625
  c.archs = 'resnet18'
  c.seeds_per_arch = 2
  c.model_kwargs = {'resnet18': {'stem': 'imagenet'}}
  c.epochs = epochs
  c.batch_size = 16
  c.eval_batch_size = 32
  c.optimizer.warmup_epochs = 0.0
  c.stream.num_threads = 4
  c.stream.index_cache_dir = os.path.join(workdir, 'index_cache')
  c.compression.epochs = 1
  c.compression.fractions = (0.5,)
  c.compilation_cache_dir = os.path.join(os.path.dirname(workdir), 'xla')
  return c


def run(workdir: str, mode: str, epochs: int = 2):
  import tensorflow_datasets as tfds
  from easyhard_jax import stages
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
    stages.run(tiny_config(workdir, epochs), workdir, mode)


if __name__ == '__main__':
  run(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 2)
