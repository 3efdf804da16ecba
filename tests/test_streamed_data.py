"""The streamed path: grain over random-access sources, resumable, aligned."""

import os
import shutil
import signal
import subprocess
import time

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import MOCK_IMAGENET_EXAMPLES
from conftest import ROOT
from conftest import assert_identical_records
from conftest import mock_imagenet_config
from conftest import quick_config
from conftest import run_mock_imagenet
from conftest import script_command
from easyhard_jax.storage import records
from easyhard_jax import runner
from easyhard_jax.data import device_ops
from easyhard_jax.data import streaming
from easyhard_jax.train import checkpoints
from easyhard_jax.train import ensemble
from easyhard_jax.train import steps as steps_lib


def test_streamed_digits_writes_the_device_resident_records(
    one_epoch_study, tmp_path):
  """Same batches, crops and flips: the records must be equal, bit for bit."""
  _, reference = one_epoch_study
  config = quick_config(epochs=1)
  config.stream.enabled = True
  runner.run(config, str(tmp_path), 'records')
  assert_identical_records(reference, str(tmp_path))


def test_host_crops_are_deterministic_and_inside_the_image():
  img = np.arange(40 * 60 * 3, dtype=np.uint8).reshape(40, 60, 3)
  a = streaming.random_resized_crop(img, 16, np.random.default_rng([1, 2]))
  b = streaming.random_resized_crop(img, 16, np.random.default_rng([1, 2]))
  c = streaming.random_resized_crop(img, 16, np.random.default_rng([1, 3]))
  assert a.shape == (16, 16, 3) and np.array_equal(a, b)
  assert not np.array_equal(a, c)
  centre = streaming.center_crop(img, 32, 1.0)  # Shorter side 40 -> 32.
  assert centre.shape == (32, 32, 3)
  square = img[:32, :32]  # Already 32 px: still zoomed to 36, then cropped.
  zoomed = streaming.center_crop(square, 32, 0.875)
  assert zoomed.shape == (32, 32, 3) and not np.array_equal(zoomed, square)


def test_label_cache_is_keyed_by_the_tfds_split(tmp_path):
  config = mock_imagenet_config(str(tmp_path / 'w'))
  config.stream.stats_examples = 4
  with tfds.testing.mock_data(num_examples=8):
    streaming.open_streamed(config)
    config.test_split = 'train[:8]'  # As long as validation: a new key.
    streaming.open_streamed(config)
  files = sorted(os.listdir(config.stream.index_cache_dir))
  assert len(files) == 3, files  # train, validation and train[:8].


def test_analysis_samples_streamed_images_above_the_cap(quick_study,
                                                        tmp_path):
  from easyhard_jax.analysis import analyze
  _, reference = quick_study
  workdir = tmp_path / 'copy'
  shutil.copytree(reference, workdir)
  config = quick_config()
  config.stream.enabled = True
  config.analysis.similarity.max_streamed_images = 100
  data = streaming.load(config)
  out = analyze.run_analysis(config, str(workdir),
                             train_images=data.train_images,
                             test_images=data.test_images)
  assert out['similarity']['pixel_sample'] == {'rows': 100, 'of': 512}
  with np.load(workdir / 'analysis' / 'mean_images.npz') as z:
    assert z['train_all_count'].sum() == 100
    assert z['test_all_count'].sum() == 100


@pytest.fixture(scope='module')
def mock_imagenet_study(tmp_path_factory):
  """The ImageNet config (tiny) through record, analyze, compress, report."""
  workdir = str(tmp_path_factory.mktemp('mock_imagenet') / 'run')
  for mode in ('records', 'analysis', 'compression', 'report'):
    run_mock_imagenet(workdir, mode)
  return workdir


@pytest.mark.slow
def test_imagenet_config_runs_end_to_end_on_mock_data(mock_imagenet_study):
  workdir = mock_imagenet_study
  train = records.load(workdir, 'train')
  n = MOCK_IMAGENET_EXAMPLES
  assert train.correct.shape[0] == 2 and train.correct.shape[2] == n
  with tfds.testing.mock_data(num_examples=n):
    source = tfds.data_source('imagenet2012', split='train')
    labels = [int(source[i]['label']) for i in range(n)]
    names = [source[i]['file_name'] for i in range(n)]
  np.testing.assert_array_equal(train.labels, labels)
  assert train.tfds_ids == [x.decode() if isinstance(x, bytes) else x
                            for x in names]
  results = os.path.join(workdir, 'compression', 'results.json')
  assert os.path.exists(results)
  assert os.path.exists(os.path.join(workdir, 'report', 'index.html'))


@pytest.mark.slow
def test_streamed_probe_records_sit_at_their_example_index(
    mock_imagenet_study):
  """Recompute the final probe for a few examples, one image at a time."""
  workdir = mock_imagenet_study
  with tfds.testing.mock_data(num_examples=MOCK_IMAGENET_EXAMPLES):
    config = mock_imagenet_config(workdir)
    data = streaming.open_streamed(config)
    t = ensemble.ArchTrainer(config, data, 'resnet18')
    ckpt = checkpoints.Checkpointer(
        os.path.join(workdir, 'checkpoints', 'resnet18'))
    states, step = ckpt.restore_latest(t.init_states())
    probe = records.load(workdir, 'test')
    assert probe.probe_steps[-1] == step
    for i in (0, 17, MOCK_IMAGENET_EXAMPLES - 1):
      x = device_ops.normalize(data.eval_image('test', i)[None], t.mean, t.std)
      for m in range(2):
        member = jax.tree.map(lambda a, m=m: a[m], states)
        logits = t.model.apply({'params': member.params,
                                'batch_stats': member.batch_stats}, x)
        ref = steps_lib.per_example_stats(logits, data.test_labels[i:i + 1])
        np.testing.assert_allclose(probe.loss[m, -1, i], ref.loss[0],
                                   rtol=2e-4, atol=1e-5)


@pytest.mark.slow
def test_streamed_run_resumes_after_kill_at_the_right_position(tmp_path):
  """kill -9 after the first epoch's checkpoint; the rerun must write the
  records of an uninterrupted run, so the loader restarted where it should."""

  def cmd(workdir):
    return script_command('from conftest import run_mock_imagenet\n'
                          'run_mock_imagenet({w!r}, "records", 3)', w=workdir)

  killed, clean = str(tmp_path / 'killed'), str(tmp_path / 'clean')
  proc = subprocess.Popen(cmd(killed), cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  ckpt_dir = os.path.join(killed, 'checkpoints', 'resnet18')
  deadline = time.time() + 300
  try:
    while time.time() < deadline and proc.poll() is None:
      if os.path.isdir(ckpt_dir) and any(
          d.isdigit() for d in os.listdir(ckpt_dir)):
        break
      time.sleep(0.05)
    assert proc.poll() is None, 'run ended before it could be killed'
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
  finally:
    if proc.poll() is None:
      proc.kill()
  assert not records.read_manifest(killed)['archs']['resnet18']['complete']
  subprocess.run(cmd(killed), cwd=ROOT, check=True, capture_output=True,
                 timeout=300)
  subprocess.run(cmd(clean), cwd=ROOT, check=True, capture_output=True,
                 timeout=300)
  assert_identical_records(clean, killed)


def test_streaming_an_unknown_dataset_is_a_clear_error():
  config = quick_config(dataset='no_such_set')
  config.stream.enabled = True
  with pytest.raises(ValueError, match="Unknown dataset 'no_such_set'"):
    streaming.load(config)
