"""Two local processes (jax.distributed, gloo, 2 CPU devices each) record the
same study as one process, and run the whole study (every stage, killed and
resumed) to the same outputs; bounded by timeouts so nothing can hang."""

import importlib.util
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT
from conftest import assert_same_records
from conftest import script_env
from conftest import start_script

_spec = importlib.util.spec_from_file_location(
    'fault_injection', os.path.join(ROOT, 'launch', 'fault_injection.py'))
faults = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(faults)

_RUN = """
from conftest import quick_config
from easyhard_jax import runner
c = quick_config(epochs=1, max_train_examples={examples!r})
c.stream.enabled = {stream!r}
c.distributed.coordinator_address = '127.0.0.1:{port}'
c.distributed.num_processes = 2
c.distributed.process_id = {pid}
runner.run(c, {workdir!r}, 'records')
import jax
assert jax.process_count() == 2 and jax.device_count() == 4
"""


def _launch(workdir, stream=False, examples=512):
  """Two processes of the quick study's record stage on ``workdir``."""
  port = _free_port()
  return [start_script(_RUN, devices=2, port=port, pid=pid, workdir=workdir,
                       stream=stream, examples=examples) for pid in (0, 1)]


def _communicate(procs, timeout):
  try:
    return [p.communicate(timeout=timeout)[0] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize('stream', [False, True])
def test_two_processes_record_like_one(one_epoch_study, tmp_path, stream):
  """Streamed, each process loads only its half of every global batch."""
  _, reference = one_epoch_study
  workdir = str(tmp_path / 'two_processes')
  procs = _launch(workdir, stream)
  outs = _communicate(procs, 400)
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  assert_same_records(reference, workdir)


@pytest.mark.slow
def test_a_bad_workdir_stops_every_process_with_its_message(one_epoch_study,
                                                            tmp_path):
  """Input checks run on every process: no process waits in a collective."""
  _, reference = one_epoch_study
  workdir = str(tmp_path / 'other_dataset')
  shutil.copytree(reference, workdir)
  procs = _launch(workdir, examples=256)  # Other labels than the records.
  outs = _communicate(procs, 120)
  for p, out in zip(procs, outs):
    assert p.returncode != 0 and 'Use a fresh --workdir' in out, out[-3000:]


# The whole study (every stage) as two processes, killed once inside the
# removal sweep and resumed, against the one-process run: tests/
# test_study_resume.py's tiny config, on 4 global devices either way (one
# process with 4 forced devices, or 2 processes with 2 each), so the two runs
# differ only in how the collectives are carried out.
_STUDY_TIMEOUT_S = 1200  # One run took ~9 min on 2 cores at load 12.


def _tiny_config(tmp_path) -> str:
  from test_study_resume import TINY_CONFIG  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / 'tiny_study.py')
  with open(path, 'w') as f:
    f.write(TINY_CONFIG)
  return path


def _launcher(config_path, workdir):
  """launch/local_multiprocess.sh: 2 processes x 2 devices, own session."""
  cmd = ['bash', os.path.join(ROOT, 'launch', 'local_multiprocess.sh'),
         config_path, workdir, '2', '2', str(_free_port())]
  return subprocess.Popen(cmd, cwd=ROOT, env=dict(script_env(),
                                                  JAX_PLATFORMS='cpu'),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, start_new_session=True)


def _first_sweep_checkpoint(workdir):
  from test_study_resume import first_sweep_checkpoint as first  # pylint: disable=g-import-not-at-top
  return first(workdir)


@pytest.mark.slow
def test_two_processes_run_the_whole_study_like_one_after_a_kill(tmp_path):
  config_path = _tiny_config(tmp_path)
  reference = str(tmp_path / 'one_process')
  one = subprocess.run(
      [sys.executable, '-m', 'easyhard_jax.main', f'--config={config_path}',
       f'--workdir={reference}'], cwd=ROOT, capture_output=True, text=True,
      env=dict(script_env(4), JAX_PLATFORMS='cpu'), timeout=_STUDY_TIMEOUT_S)
  assert one.returncode == 0, one.stderr[-3000:]
  workdir = str(tmp_path / 'two_processes')
  proc = _launcher(config_path, workdir)
  try:
    deadline = time.time() + _STUDY_TIMEOUT_S
    while (proc.poll() is None and time.time() < deadline and
           _first_sweep_checkpoint(workdir) is None):
      time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[0][-3000:]
    os.killpg(proc.pid, signal.SIGKILL)  # Both processes, at once.
    proc.wait(timeout=30)
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
  assert not os.path.exists(os.path.join(workdir, 'removal', 'results.json'))
  proc = _launcher(config_path, workdir)
  out = _communicate([proc], _STUDY_TIMEOUT_S)[0]
  assert proc.returncode == 0, out[-3000:]
  assert 'Stage records is complete; skipping.' in out
  assert_same_records(reference, workdir)
  for group in ('reference', 'frac_0.500'):
    assert_same_records(os.path.join(reference, 'removal', group),
                        os.path.join(workdir, 'removal', group))
  differences = _beyond_float_noise(faults.compare_outputs(reference,
                                                          workdir))
  assert differences == [], differences[:20]
  for name in ('scores_train.npz', 'scores_test.npz'):
    a, b = (np.load(os.path.join(w, 'exports', name), allow_pickle=False)
            for w in (reference, workdir))
    assert sorted(a.files) == sorted(b.files)
    for key in a.files:
      if a[key].dtype.kind == 'f':
        np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-5,
                                   err_msg=f'{name} {key}')
      else:
        np.testing.assert_array_equal(a[key], b[key], err_msg=f'{name} {key}')


def _beyond_float_noise(differences):
  """compare_outputs' differences larger than reduction-order noise.

  The two runs sum across devices in another order (gloo between processes,
  XLA's in-process collectives in one), so floats differ in their last bits;
  the exports, whole files of such floats, are compared above instead.
  """
  out = []
  for line in differences:
    if line.startswith('exports/'):
      continue
    m = re.fullmatch(r'(.*): (\S+) != (\S+)', line)
    try:
      a, b = float(m[2]), float(m[3])
    except (TypeError, ValueError):
      out.append(line)
      continue
    if not math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-5):
      out.append(line)
  return out
