"""Shared fixtures: tiny study configs, recorded studies, a script runner.

Tests import these helpers one way, ``from conftest import NAME`` (pytest
puts tests/ on sys.path); scripts run by :func:`run_script` and
:func:`start_script` do the same, so a subprocess uses this very module.
"""

import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, 'tests')
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
  from easyhard_jax import runner
  workdir = str(tmp_path_factory.mktemp('quick_study'))
  config = quick_config()
  runner.run(config, workdir, 'records')
  return config, workdir


@pytest.fixture(scope='session')
def one_epoch_study(tmp_path_factory):
  """(config, workdir) of a one-epoch quick study on one device."""
  from easyhard_jax import runner
  workdir = str(tmp_path_factory.mktemp('one_epoch_study'))
  config = quick_config(epochs=1)
  runner.run(config, workdir, 'records')
  return config, workdir


def assert_identical_records(reference: str, other: str):
  """Probe schedule, correctness and losses (probe and fused) bit-equal."""
  import numpy as np
  from easyhard_jax.storage import records
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
  from easyhard_jax.storage import records
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
#   start_script('from conftest import run_mock_imagenet\n'
#                'run_mock_imagenet({w!r}, "records", 3)', w=workdir)
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
  from easyhard_jax import runner
  with tfds.testing.mock_data(num_examples=MOCK_IMAGENET_EXAMPLES):
    runner.run(mock_imagenet_config(workdir, epochs), workdir, mode)


def script_command(body: str, **values) -> list[str]:
  """argv of a fresh Python running ``body`` (``str.format``-ed by values).

  The repository and tests/ come first on its sys.path, so the script
  imports ``easyhard_jax``, ``configs`` and ``conftest`` as the tests do.
  """
  prelude = f'import sys\nsys.path[:0] = [{ROOT!r}, {TESTS!r}]\n'
  return [sys.executable, '-c',
          prelude + textwrap.dedent(body).format(**values)]


def script_env(devices: int | None = None) -> dict[str, str]:
  """This environment, with ``devices`` forced XLA host devices if given.

  The device flag is appended to any XLA_FLAGS already set (e.g.
  ``--xla_cpu_max_isa=AVX2``); XLA takes the last device count.
  """
  env = dict(os.environ)
  if devices:
    flag = f'--xla_force_host_platform_device_count={devices}'
    env['XLA_FLAGS'] = f"{env.get('XLA_FLAGS', '')} {flag}".strip()
  return env


def run_script(body: str, *, timeout: float, devices: int | None = None,
               **values) -> subprocess.CompletedProcess:
  """Runs a script (see :func:`script_command`) to its end, in ROOT.

  Args:
    body: Python source; ``{name}`` fields are filled from ``values``.
    timeout: seconds before the process is killed (subprocess.TimeoutExpired).
    devices: forced XLA host devices (None: as this process's environment).
    **values: the template's fields.

  Returns:
    The finished process; ``stdout`` and ``stderr`` are text. Its return
    code is not checked: the caller asserts on it with the output.
  """
  return subprocess.run(script_command(body, **values), cwd=ROOT,
                        env=script_env(devices), timeout=timeout,
                        capture_output=True, text=True)


def start_script(body: str, *, devices: int | None = None,
                 stderr: int | None = subprocess.STDOUT,
                 **values) -> subprocess.Popen:
  """Starts a script without waiting (processes that run together).

  ``stdout`` is a text pipe (stderr joins it unless ``stderr`` says
  otherwise); bound the wait with ``communicate(timeout=...)`` and kill it
  in a ``finally``.
  """
  return subprocess.Popen(script_command(body, **values), cwd=ROOT,
                          env=script_env(devices), stdout=subprocess.PIPE,
                          stderr=stderr, text=True)
