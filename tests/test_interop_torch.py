"""examples/torch_cifar10.py, tiny: a PyTorch loop's records analyze here.

Skipped where torch is not installed (it is no dependency of the project).
"""

import importlib.util
import os

import numpy as np
import pytest

from conftest import quick_config
from conftest import random_dataset
from conftest import ROOT
from easyhard_jax.storage import records

torch = pytest.importorskip('torch')


def _example():
  path = os.path.join(ROOT, 'examples', 'torch_cifar10.py')
  spec = importlib.util.spec_from_file_location('torch_cifar10', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.slow
def test_tiny_torch_run_logs_records_the_analysis_reads(tmp_path):
  from easyhard_jax.analysis import analyze
  example = _example()
  data = random_dataset(num_train=96, num_test=32, shape=(8, 8, 3))
  workdir = str(tmp_path)
  summary = example.train_and_log(data, workdir, members=2, epochs=2,
                                  batch_size=32, width=0.0625,
                                  eval_batch_size=40,
                                  first_epoch_fractions=(0.5,))
  assert summary == {'complete': ['resnet18'], 'waiting': {}}
  train = records.load(workdir, 'train')
  assert train.correct.shape == (2, 4, 96)
  np.testing.assert_array_equal(train.probe_steps, [0, 2, 3, 6])
  np.testing.assert_array_equal(train.labels, data.train_labels)
  assert (train.pred >= 0).all() and np.isfinite(train.loss).all()
  fused = records.load(workdir, 'train', 'fused')
  assert fused.correct.shape == (2, 2, 96) and (fused.pred >= 0).all()
  config = quick_config(archs='resnet18')
  result = analyze.run_analysis(config, workdir)
  assert result['records']['train']['members'] == 2
  assert os.path.exists(os.path.join(workdir, 'analysis',
                                     'scores_train.csv'))
