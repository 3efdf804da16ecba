"""Two local processes (jax.distributed, gloo, 2 CPU devices each) record the
same study as one process; bounded by a timeout so it cannot hang."""

import shutil
import socket

import pytest

from conftest import assert_same_records
from conftest import start_script

_RUN = """
from conftest import quick_config
from easyhard_jax import runner
c = quick_config(epochs=1, max_train_examples={examples!r})
c.stream.enabled = {stream!r}
c.distributed.coordinator_address = '127.0.0.1:{port}'
c.distributed.num_processes = 2
c.distributed.process_id = {pid}
runner.run(c, {workdir!r}, 'record')
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
