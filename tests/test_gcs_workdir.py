"""The file layer on an object store: a real GCS JSON API, no network.

A module fixture starts ``gcp-storage-emulator`` (PyPI) on 127.0.0.1 (through
``gcs_emulator.py``, which serves connections in parallel) and
points the GCS clients at it: ``STORAGE_EMULATOR_HOST`` for gcsfs (epath's
fsspec backend) and google-cloud-storage (tensorboardX's ``gs://`` writer),
``TENSORSTORE_GCS_HTTP_URL`` and a test token for tensorstore (orbax's array
writer). Each test writes under its own ``gs://eh-test/<random>/`` prefix and
checks the same calls it makes on a local directory give the same results.
Without the emulator or gcsfs (both in the ``test`` extra) the tests skip,
saying why. The emulator ignores ``ifGenerationMatch``, so two runs
creating the lease at the same instant are not tested here (GCS refuses
the second); every lease test runs one after the other.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

import numpy as np
import pytest

from easyhard_jax.storage import files

BUCKET = 'eh-test'


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.fixture(scope='module')
def gcs():
  """The emulator's URL; the process environment points every client there."""
  pytest.importorskip('gcsfs', reason='gcsfs is not installed (pip install '
                      "-e '.[test]')")
  pytest.importorskip('gcp_storage_emulator', reason='gcp-storage-emulator '
                      "is not installed (pip install -e '.[test]')")
  port = _free_port()
  url = f'http://127.0.0.1:{port}'
  # Its log goes to a file: the emulator logs every request to stderr, and
  # an unread pipe fills (64 KB) and blocks it, and with it every client.
  log = tempfile.TemporaryFile()
  proc = subprocess.Popen(
      [sys.executable, os.path.join(os.path.dirname(__file__),
                                    'gcs_emulator.py'), str(port), BUCKET],
      stdout=subprocess.DEVNULL, stderr=log)
  deadline = time.time() + 60
  while True:
    try:
      urllib.request.urlopen(f'{url}/storage/v1/b/{BUCKET}', timeout=2)
      break
    except OSError:
      if proc.poll() is not None or time.time() > deadline:
        proc.kill()
        proc.wait()
        log.seek(0)
        err = log.read().decode(errors='replace')[-2000:]
        pytest.skip(f'gcp-storage-emulator did not start on port {port}: '
                    f'{err or "no answer within 60 s"}')
      time.sleep(0.2)
  env = {'STORAGE_EMULATOR_HOST': url, 'TENSORSTORE_GCS_HTTP_URL': url,
         'GOOGLE_AUTH_TOKEN_FOR_TESTING': 'emulator',
         'GOOGLE_CLOUD_PROJECT': 'eh-test'}
  saved = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  import gcsfs  # pylint: disable=g-import-not-at-top
  gcsfs.GCSFileSystem.clear_instance_cache()  # Built before the env was set.
  yield url
  for k, v in saved.items():
    if v is None:
      os.environ.pop(k, None)
    else:
      os.environ[k] = v
  gcsfs.GCSFileSystem.clear_instance_cache()
  proc.kill()
  proc.wait()
  log.close()


@pytest.fixture
def gs_dir(gcs):  # pylint: disable=redefined-outer-name,unused-argument
  return f'gs://{BUCKET}/{uuid.uuid4().hex[:12]}'


def test_paths_are_told_apart():
  assert files.is_remote('gs://b/x') and files.is_remote('file:///tmp/x')
  assert not files.is_remote('/tmp/gs:/x') and not files.is_remote('rel/x')
  assert os.path.join('gs://b/w', 'records') == 'gs://b/w/records'


def test_another_writers_objects_are_seen_at_once(gs_dir):
  """A prefix listed earlier does not hide what another writer put there
  since (a pod's process 0; a killed run, before its rerun): gcsfs's
  listings cache is off."""
  import gcsfs  # pylint: disable=g-import-not-at-top
  files.atomic_write_bytes(os.path.join(gs_dir, 'a'), b'1')
  assert files.listdir(gs_dir) == ['a'] and files.isdir(gs_dir)
  other = gcsfs.GCSFileSystem(skip_instance_cache=True)  # Another process.
  other.pipe(os.path.join(gs_dir, 'b'), b'2')
  assert files.exists(os.path.join(gs_dir, 'b'))
  assert sorted(files.listdir(gs_dir)) == ['a', 'b']


def test_files_round_trip(gs_dir, tmp_path):
  for root in (gs_dir, str(tmp_path)):
    d = os.path.join(root, 'stage')
    files.makedirs(d)
    files.atomic_write_json(os.path.join(d, 'a.json'), {'x': [1, 2.5]})
    files.atomic_write_csv(os.path.join(d, 'b.csv'),
                           [{'example_index': 0, 'label': 3, 'score': 0.5}])
    files.atomic_savez(os.path.join(d, 'c.npz'), {'v': np.arange(5)})
    files.atomic_save_npy(os.path.join(d, 'd.npy'), np.ones(3, np.int32))
    assert files.read_json(os.path.join(d, 'a.json')) == {'x': [1, 2.5]}
    assert files.read_csv(os.path.join(d, 'b.csv')) == [
        {'example_index': '0', 'label': '3', 'score': '0.5'}]
    assert sorted(files.listdir(d)) == ['a.json', 'b.csv', 'c.npz', 'd.npy']
    assert files.isdir(d) and files.isfile(os.path.join(d, 'a.json'))
    assert files.unreadable_outputs(d) == []
    files.atomic_write_bytes(os.path.join(d, 'e.json'), b'{"torn')
    assert files.unreadable_outputs(d) == [os.path.join(d, 'e.json')]
    with pytest.raises(ValueError, match='e.json is damaged'):
      files.read_json(os.path.join(d, 'e.json'))
    with np.load(files.readable(os.path.join(d, 'c.npz'))) as z:
      np.testing.assert_array_equal(z['v'], np.arange(5))
    files.remove(os.path.join(d, 'e.json'))
    assert not files.exists(os.path.join(d, 'e.json'))
    assert files.clear_stale_temp(root) == 0
    files.rmtree(d)
    assert not files.exists(d)
  with pytest.raises(ValueError, match='cannot append'):
    files.open_file(os.path.join(gs_dir, 'log.jsonl'), 'a')


def _holder(path):
  return json.loads(files.read_bytes(path))


@pytest.mark.slow
def test_lease_lock(gs_dir):
  lock = files.WorkdirLock(gs_dir, lease_seconds=3).acquire()
  first = _holder(lock.path)
  assert first['pid'] == os.getpid()
  with pytest.raises(files.WorkdirBusyError,
                     match=f'pid {os.getpid()}.*lease .*expires in'):
    files.WorkdirLock(gs_dir).acquire()
  time.sleep(3.5)  # Past the first expiry: the holder renewed it.
  assert _holder(lock.path)['expires'] > first['expires']
  with pytest.raises(files.WorkdirBusyError):
    files.WorkdirLock(gs_dir).acquire()
  lock.release()
  assert not files.exists(lock.path)
  with files.WorkdirLock(gs_dir) as again:
    assert _holder(again.path)['pid'] == os.getpid()
  assert not files.exists(again.path)


def test_lease_of_a_dead_or_expired_holder_is_taken_over(gs_dir):
  path = os.path.join(gs_dir, files.LOCK_NAME)
  dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                        capture_output=True, text=True, check=True)
  stale = [  # A killed run on this host; one on a host that went away.
      {'token': 't', 'host': socket.gethostname(),
       'pid': int(dead.stdout), 'expires': time.time() + 600},
      {'token': 't', 'host': 'elsewhere', 'pid': 1,
       'expires': time.time() - 1}]
  for holder in stale:
    files.atomic_write_json(path, holder)
    with files.WorkdirLock(gs_dir):
      assert _holder(path)['pid'] == os.getpid()
  files.atomic_write_json(path, {'token': 't', 'host': 'elsewhere', 'pid': 1,
                                 'expires': time.time() + 600})
  with pytest.raises(files.WorkdirBusyError, match='elsewhere'):
    files.WorkdirLock(gs_dir).acquire()


def test_stage_commit(gs_dir):
  from easyhard_jax import fingerprint  # pylint: disable=g-import-not-at-top
  assert fingerprint.read_stamp(gs_dir, 'analysis') is None
  files.atomic_write_json(os.path.join(gs_dir, 'analysis', 'x.json'), [1])
  fingerprint.commit_stage(gs_dir, 'analysis', {'hash': 'h', 'fields': {}})
  assert fingerprint.read_stamp(gs_dir, 'analysis')['hash'] == 'h'
  fingerprint.invalidate(gs_dir, 'analysis')
  assert fingerprint.read_stamp(gs_dir, 'analysis') is None
  fingerprint.remove_outputs(os.path.join(gs_dir, 'analysis'))
  assert not files.exists(os.path.join(gs_dir, 'analysis'))


def _write_records(workdir):
  from easyhard_jax.storage import records  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  w = records.RecordWriter(workdir, enabled=True)
  labels = rng.integers(0, 10, 7)
  w.write_split_metadata('train', labels, [f'id{i}' for i in range(7)])
  members = [{'name': 'cnn_0', 'arch': 'cnn', 'seed': 0}]
  w.begin_arch('cnn', members, 4, [0, 4], {'hash': 'fp', 'fields': {}})
  for i, step in enumerate([0, 4]):
    logits = rng.normal(size=(1, 7)).astype(np.float32)
    w.write_chunk('cnn', 'probe', 'train', i, step, {
        'correct': logits > 0, 'loss': logits, 'margin': logits,
        'p_true': logits, 'el2n': logits, 'pred': np.zeros((1, 7), int)})
  w.finish_arch('cnn')
  return w


def test_records_equal_a_local_workdir(gs_dir, tmp_path):
  from easyhard_jax.storage import records  # pylint: disable=g-import-not-at-top
  for workdir in (gs_dir, str(tmp_path)):
    assert _write_records(workdir).is_complete('cnn')
  remote, local = records.load(gs_dir), records.load(str(tmp_path))
  for field in records.FIELDS + ('labels', 'probe_steps'):
    np.testing.assert_array_equal(getattr(remote, field),
                                  getattr(local, field))
  assert remote.tfds_ids == local.tfds_ids
  for name in ('manifest.json', 'labels_train.npy', 'cnn/probe_train_0001.npz'):
    assert files.read_bytes(os.path.join(gs_dir, 'records', name)) == (
        files.read_bytes(os.path.join(tmp_path, 'records', name)))
  # A damaged manifest is set aside and rebuilt from the chunk files.
  manifest = os.path.join(gs_dir, 'records', 'manifest.json')
  files.atomic_write_bytes(manifest, b'{"archs": 5')
  w = records.RecordWriter(gs_dir, enabled=True)
  assert files.exists(os.path.join(gs_dir, 'records', 'manifest.damaged.json'))
  w.begin_arch('cnn', [{'name': 'cnn_0', 'arch': 'cnn', 'seed': 0}], 4,
               [0, 4], {'hash': 'fp', 'fields': {}})
  assert sorted(w.manifest['archs']['cnn']['chunks']['probe_train']) == [
      '0', '1']


@pytest.mark.slow  # Imports tensorboard: 57 s on two busy cores.
def test_metrics_writer(gs_dir, tmp_path):
  from easyhard_jax.storage import metrics_writer  # pylint: disable=g-import-not-at-top
  rows = {}
  for workdir in (gs_dir, str(tmp_path)):
    with metrics_writer.MetricsWriter(workdir) as w:
      for step in (1, 2, 3):
        w.write(step, {'loss': 1.0 / step}, prefix='train', arch='cnn',
                kind='epoch')
    time.sleep(1.1)  # Event files are named by the second they are made.
    with metrics_writer.MetricsWriter(workdir) as w:  # A resumed run.
      w.write(3, {'loss': 0.25}, prefix='train', arch='cnn', kind='epoch')
      w.write(4, {'loss': float('nan')}, prefix='train', arch='cnn',
              kind='epoch')
    with files.open_file(os.path.join(workdir, 'metrics.jsonl')) as f:
      rows[workdir] = [{k: v for k, v in json.loads(line).items()
                        if k != 'wall_time'} for line in f]
  assert rows[gs_dir] == rows[str(tmp_path)]
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  steps = {}
  for workdir in (gs_dir, str(tmp_path)):
    events = tmp_path / 'events' / ('gs' if workdir == gs_dir else 'local')
    events.mkdir(parents=True)
    for name in files.listdir(os.path.join(workdir, 'tensorboard')):
      (events / name).write_bytes(files.read_bytes(os.path.join(
          workdir, 'tensorboard', name)))
    acc = event_accumulator.EventAccumulator(str(events))
    acc.Reload()
    steps[workdir] = sorted({e.step for e in acc.Scalars('train/loss')})
  assert steps[gs_dir] == steps[str(tmp_path)] == [1, 2, 3, 4]
  assert [r['train/loss'] for r in rows[gs_dir]] == [1.0, 0.5, 0.25, None]


@pytest.mark.slow  # orbax through tensorstore: 60 s on two busy cores.
def test_checkpoints(gs_dir):
  import flax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from easyhard_jax.train import analysis_checkpoints  # pylint: disable=g-import-not-at-top
  from easyhard_jax.train import checkpoints  # pylint: disable=g-import-not-at-top

  @flax.struct.dataclass
  class State:
    w: jnp.ndarray
    step: jnp.ndarray

  def state(step):
    return State(w=jnp.arange(6.0) * step, step=jnp.int32(step))

  directory = os.path.join(gs_dir, 'checkpoints', 'cnn')
  ckpt = checkpoints.Checkpointer(directory, max_to_keep=2)
  assert ckpt.directory == directory
  for step in (1, 2, 3):
    ckpt.save(step, state(step))
    ckpt.wait()
  assert ckpt.steps() == [2, 3]
  assert sorted(n for n in files.listdir(directory) if 'checksum' in n) == [
      'checksum_2.json', 'checksum_3.json']
  restored = ckpt.restore(3, state(0))
  np.testing.assert_array_equal(restored.w, np.arange(6.0) * 3)
  ckpt.delete_after(2)
  assert ckpt.steps() == [2]
  again = checkpoints.Checkpointer(directory)  # A resumed run.
  restored, step = again.restore_latest(state(0))
  assert step == 2 and float(restored.w[1]) == 2.0
  # A save a kill cut short: orbax writes a bucket's step in place and
  # commits it last (commit_success.txt). The next run drops the half-written
  # step, saves it again, and restores that.
  again.save(3, state(3))
  again.wait()
  files.remove(os.path.join(directory, '3', 'commit_success.txt'))
  rerun = checkpoints.Checkpointer(directory)
  assert rerun.steps() == [2]
  rerun.save(3, state(7))
  rerun.wait()
  assert rerun.steps() == [2, 3]
  assert float(rerun.restore(3, state(0)).w[1]) == 7.0
  fp = {'hash': 'fp', 'fields': {}}
  assert analysis_checkpoints.prepare(again, 2, fp) == {2}
  analysis_checkpoints.check(directory, fp)
  with pytest.raises(ValueError, match='other config values'):
    analysis_checkpoints.check(directory, {'hash': 'other', 'fields': {}})


def _download(url, local):
  """Copies every object under ``url`` to the local directory ``local``."""
  for name in files.listdir(url):
    src, dst = os.path.join(url, name), os.path.join(local, name)
    if files.isdir(src):
      _download(src, dst)
    else:
      os.makedirs(local, exist_ok=True)
      with open(dst, 'wb') as f:
        f.write(files.read_bytes(src))


def _every(seconds, check):
  """``check`` at most once per ``seconds`` (each is a bucket request)."""
  last = [0.0]

  def throttled():
    if time.time() - last[0] < seconds:
      return False
    last[0] = time.time()
    return check()
  return throttled


@pytest.mark.slow  # The tiny study, locally and killed twice (~2 min).
def test_a_sigkilled_study_in_a_bucket_resumes_to_a_local_runs_outputs(
    gs_dir, tmp_path):
  """``kill -9`` inside the records stage and inside the removal sweep of a
  study in a bucket; the reruns resume from what is in the bucket (records,
  stamps, orbax checkpoints, the dead run's lease) and end with the files
  of an uninterrupted local run, byte for byte.

  The study runs as the user runs it (``python -m easyhard_jax.main``, as
  test_study_resume does locally), its config test_study_resume's tiny one.
  launch/output_digest.py leaves out what differs between any two runs
  (logs, timings, lock, TensorBoard, checkpoints, report HTML/PNG); the
  report's summary is compared without its workdir line.
  """
  import importlib.util  # pylint: disable=g-import-not-at-top
  from conftest import ROOT  # pylint: disable=g-import-not-at-top
  # pylint: disable-next=g-import-not-at-top
  from test_study_resume import TIMEOUT_S, TINY_CONFIG, faults
  from test_study_resume import first_sweep_checkpoint  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location(
      'output_digest', os.path.join(ROOT, 'launch', 'output_digest.py'))
  output_digest = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(output_digest)
  config_path = str(tmp_path / 'tiny_study.py')
  with open(config_path, 'w') as f:
    f.write(TINY_CONFIG)
  local = str(tmp_path / 'local')
  faults.run_to_end(faults.command(config_path, local), TIMEOUT_S)

  cmd = faults.command(config_path, gs_dir)  # The emulator's env is inherited.
  first_chunk = os.path.join(gs_dir, 'records', 'cnn', 'fused_train_0000.npz')
  for i, (stage, when) in enumerate((
      ('records', lambda: files.exists(first_chunk)),
      ('removal', lambda: first_sweep_checkpoint(gs_dir) is not None))):
    row = faults.run_and_kill(cmd, str(tmp_path / f'kill{i}.log'),
                              _every(0.2, when), TIMEOUT_S)
    assert row['killed'] and row['stage'] == stage, row
  assert not files.exists(os.path.join(gs_dir, 'removal', 'stamp.json'))
  log = faults.run_to_end(cmd, TIMEOUT_S)
  for stage in ('records', 'analysis'):  # Finished before the kill: kept.
    assert f'Stage {stage} is complete; skipping.' in log, stage

  remote = str(tmp_path / 'remote')
  _download(gs_dir, remote)
  assert output_digest.digests(remote) == output_digest.digests(local)
  summary = lambda w: [l for l in files.read_bytes(os.path.join(
      w, 'report', 'summary.md')).decode().splitlines() if 'workdir' not in l]
  assert summary(remote) == summary(local)
  assert not files.exists(os.path.join(gs_dir, files.LOCK_NAME))


def test_lease_of_a_killed_run_is_taken_over_at_once(gs_dir):
  """kill -9 leaves the lease object; a rerun on this host takes it."""
  proc = subprocess.Popen(
      [sys.executable, '-c',
       'import sys, time\nfrom easyhard_jax.storage import files\n'
       f'files.WorkdirLock({gs_dir!r}).acquire()\n'
       'print("held", flush=True)\ntime.sleep(120)'],
      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  try:
    assert proc.stdout.readline().strip() == 'held'
    with pytest.raises(files.WorkdirBusyError, match=f'pid {proc.pid}'):
      files.WorkdirLock(gs_dir).acquire()
    proc.kill()
    proc.wait(timeout=30)
  finally:
    if proc.poll() is None:
      proc.kill()
  path = os.path.join(gs_dir, files.LOCK_NAME)
  assert _holder(path)['expires'] > time.time() + 30  # Not expired: left.
  with files.WorkdirLock(gs_dir):
    assert _holder(path)['pid'] == os.getpid()
