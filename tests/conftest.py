"""Shared fixtures: tiny study configs and one recorded quick study."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # `from configs import ...` as main.py does.
  sys.path.insert(0, ROOT)


def quick_config(**overrides):
  """configs/digits_quick.py with dotted-name overrides."""
  from configs import digits_quick
  c = digits_quick.get_config()
  for key, value in overrides.items():
    target = c
    parts = key.split('.')
    for p in parts[:-1]:
      target = target[p]
    target[parts[-1]] = value
  return c


def random_dataset(num_train: int = 256, num_test: int = 64,
                   shape=(8, 8, 1), num_classes: int = 10, seed: int = 0):
  """A Dataset of uniformly random uint8 images and labels.

  For tests that compare two float paths (fused vs separate pass, member
  strategies): digits' flat regions make max-pool ties and ReLU kinks that
  flip with float summation order, so those paths would diverge on some CPUs;
  random pixels make such exact ties vanishingly unlikely.
  """
  import numpy as np
  from easyhard_jax.data import sources
  rng = np.random.default_rng(seed)
  images = lambda n: rng.integers(0, 256, (n,) + tuple(shape), np.uint8)
  labels = lambda n: rng.integers(0, num_classes, n).astype(np.int32)
  return sources.Dataset('random', images(num_train), labels(num_train),
                         images(num_test), labels(num_test), num_classes)


@pytest.fixture(scope='session')
def quick_study(tmp_path_factory):
  """(config, workdir) of a finished quick digits study (shared, read-only)."""
  from easyhard_jax import stages
  workdir = str(tmp_path_factory.mktemp('quick_study'))
  config = quick_config()
  stages.run(config, workdir, 'record')
  return config, workdir


@pytest.fixture(scope='session')
def one_epoch_study(tmp_path_factory):
  """(config, workdir) of a one-epoch quick study on one device."""
  from easyhard_jax import stages
  workdir = str(tmp_path_factory.mktemp('one_epoch_study'))
  config = quick_config(epochs=1)
  stages.run(config, workdir, 'record')
  return config, workdir


def assert_identical_records(reference: str, other: str):
  """Probe schedule, correctness and losses (probe and fused) bit-equal."""
  import numpy as np
  from easyhard_jax import records
  for split in ('train', 'test'):
    a, b = records.load(reference, split), records.load(other, split)
    np.testing.assert_array_equal(a.probe_steps, b.probe_steps)
    np.testing.assert_array_equal(a.correct, b.correct)
    np.testing.assert_array_equal(a.loss, b.loss)
  fa = records.load(reference, 'train', 'fused')
  fb = records.load(other, 'train', 'fused')
  np.testing.assert_array_equal(fa.loss, fb.loss)


def assert_same_records(reference: str, other: str, tol: float = 1e-4):
  """Records equal up to float reduction order across devices.

  Losses must agree within ``tol``; correctness must be identical except for
  examples whose reference margin is itself within ``tol`` of a tie.
  """
  import numpy as np
  from easyhard_jax import records
  for split in ('train', 'test'):
    a, b = records.load(reference, split), records.load(other, split)
    np.testing.assert_array_equal(a.probe_steps, b.probe_steps)
    np.testing.assert_allclose(a.loss, b.loss, rtol=tol, atol=tol)
    flips = a.correct != b.correct
    assert not (flips & (np.abs(a.margin) > tol)).any(), (
        f'{split}: correctness differs away from ties at '
        f'{np.argwhere(flips)[:5].tolist()}')
  fa = records.load(reference, 'train', 'fused')
  fb = records.load(other, 'train', 'fused')
  np.testing.assert_allclose(fa.loss, fb.loss, rtol=tol, atol=tol)


# configs/imagenet.py shrunk to seconds on tfds.testing.mock_data; used by
# test_streamed_data.py in-process and as a subprocess (to be killed):
#   python -c "from conftest import run_mock_imagenet; run_mock_imagenet(W, MODE, EPOCHS)"
MOCK_IMAGENET_EXAMPLES = 48  # Per split; mock images have random sizes.


def mock_imagenet_config(workdir: str, epochs: int = 2):
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


def run_mock_imagenet(workdir: str, mode: str, epochs: int = 2):
  """Runs one stage of the mock ImageNet study in ``workdir``."""
  import tensorflow_datasets as tfds
  from easyhard_jax import stages
  with tfds.testing.mock_data(num_examples=MOCK_IMAGENET_EXAMPLES):
    stages.run(mock_imagenet_config(workdir, epochs), workdir, mode)
