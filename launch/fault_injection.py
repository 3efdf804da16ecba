"""Kill a study with SIGKILL at many points; the rerun must end identical.

  python launch/fault_injection.py --config=configs/digits_quick.py \
      --kills=20 --workdir=/tmp/eh_faults

Runs the study once uninterrupted (the reference), then again in another
workdir, killing it with ``kill -9`` at a random point (once the workdir holds
a randomly drawn number of the reference's output files), restarting it with
the same command, killing it again, ... ``--kills`` times, and finally letting
it finish. Prints one table row per kill (how long it ran, the stage it was
in, the newest file it had written) and compares every result file of the two
workdirs: analysis, exports, sweep and cause results, report summary.
Exit code 0 iff there are zero differences. tests/test_study_resume.py uses
the same functions with kills at chosen events instead of random times.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time
from typing import Callable

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULT_JSON = ('analysis/analysis.json', 'removal/results.json',
               'compression/results.json', 'causes/results.json')
RESULT_CSV = ('removal/results.csv', 'compression/results.csv',
              'causes/results.csv', 'analysis/scores_train.csv',
              'analysis/scores_test.csv')


def command(config_path: str, workdir: str) -> list[str]:
  return [sys.executable, '-m', 'easyhard_jax.main',
          f'--config={config_path}', f'--workdir={workdir}']


def env() -> dict[str, str]:
  # CPU only: this is about resume logic, not device numerics.
  return dict(os.environ, JAX_PLATFORMS='cpu')


def run_to_end(cmd: list[str], timeout: float) -> str:
  """Runs ``cmd`` to the end; returns its log (absl logs to stderr)."""
  out = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True,
                       text=True, timeout=timeout, check=False)
  if out.returncode != 0:
    raise RuntimeError(f'{" ".join(cmd)} failed:\n{out.stderr[-4000:]}')
  return out.stderr


def run_and_kill(cmd: list[str], log_path: str, should_kill: Callable[[], bool],
                 timeout: float) -> dict[str, object]:
  """Starts ``cmd`` and SIGKILLs it once ``should_kill()``; returns a row.

  The row says whether the kill happened (the run may finish first), after
  how many seconds, and the stage the log shows in progress.
  """
  tick = time.time()
  with open(log_path, 'w') as log:
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=log,
                            stderr=subprocess.STDOUT)
    try:
      while time.time() - tick < timeout and proc.poll() is None:
        if should_kill():
          os.kill(proc.pid, signal.SIGKILL)
          break
        time.sleep(0.02)
      proc.wait(timeout=30)
    finally:
      if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)
  with open(log_path) as f:
    text = f.read()
  started = re.findall(r'Stage (\w+) starting', text)
  if proc.returncode not in (0, -signal.SIGKILL):
    raise RuntimeError(f'{" ".join(cmd)} failed:\n{text[-4000:]}')
  return {'killed': proc.returncode == -signal.SIGKILL,
          'seconds': round(time.time() - tick, 1),
          'stage': started[-1] if started else 'start-up'}


_NOT_PROGRESS = ('.lock', 'run_log.jsonl', 'timings.json', 'metrics.jsonl')


def count_files(workdir: str) -> int:
  """Output files under ``workdir``: what a study has written so far.

  Temporaries, the lock, logs and TensorBoard files (new names every run)
  are left out, so the count only grows as the study advances.
  """
  n = 0
  for d, dirs, names in os.walk(workdir):
    dirs[:] = [x for x in dirs if 'tmp' not in x and x != 'tensorboard']
    n += sum(1 for x in names if 'tmp' not in x and x not in _NOT_PROGRESS)
  return n


def newest_file(workdir: str) -> str:
  """The most recently written file under ``workdir`` (for the table)."""
  newest, when = '', 0.0
  for d, _, names in os.walk(workdir):
    for n in names:
      p = os.path.join(d, n)
      try:
        t = os.path.getmtime(p)
      except OSError:
        continue
      if t > when:
        newest, when = os.path.relpath(p, workdir), t
  return newest


def _same(a, b, where: str, out: list[str]) -> None:
  """Exact for ints, bools and strings; floats to 1e-6 relative."""
  if isinstance(a, dict):
    if not isinstance(b, dict) or sorted(a) != sorted(b):
      out.append(f'{where}: keys differ')
      return
    for k in a:
      _same(a[k], b[k], f'{where}.{k}', out)
  elif isinstance(a, list):
    if not isinstance(b, list) or len(a) != len(b):
      out.append(f'{where}: lengths differ')
      return
    for i, (x, y) in enumerate(zip(a, b)):
      _same(x, y, f'{where}[{i}]', out)
  elif isinstance(a, float) and isinstance(b, (int, float)) and not (
      isinstance(b, bool)):
    if not ((math.isnan(a) and math.isnan(b)) or
            math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)):
      out.append(f'{where}: {a} != {b}')
  elif type(a) is not type(b) or a != b:
    out.append(f'{where}: {a!r} != {b!r}')


def _csv_rows(path: str) -> list[dict]:
  def number(text):
    try:
      return float(text)
    except ValueError:
      return text
  with open(path, newline='') as f:
    return [{k: number(v) for k, v in row.items()}
            for row in csv.DictReader(f)]


def _summary_lines(workdir: str) -> list[str]:
  with open(os.path.join(workdir, 'report', 'summary.md')) as f:
    lines = f.read().splitlines()
  return [l for l in lines if 'workdir' not in l]  # Names the run's paths.


def compare_outputs(reference: str, other: str) -> list[str]:
  """Every difference between two finished studies' results (empty: none)."""
  out: list[str] = []
  for name in RESULT_JSON + RESULT_CSV:
    paths = [os.path.join(w, name) for w in (reference, other)]
    present = [os.path.exists(p) for p in paths]
    if present != [True, True]:
      if any(present):
        out.append(f'{name}: present in only one workdir')
      continue
    if name.endswith('.json'):
      loaded = []
      for p in paths:
        with open(p) as f:
          loaded.append(json.load(f))
    else:
      loaded = [_csv_rows(p) for p in paths]
    _same(loaded[0], loaded[1], name, out)
  exports = os.path.join(reference, 'exports')
  for dirpath, _, names in os.walk(exports):
    for n in names:
      rel = os.path.relpath(os.path.join(dirpath, n), reference)
      b = os.path.join(other, rel)
      if not os.path.exists(b):
        out.append(f'{rel}: missing')
      elif n.endswith('.npz'):
        with np.load(os.path.join(reference, rel)) as za, np.load(b) as zb:
          if sorted(za.files) != sorted(zb.files):
            out.append(f'{rel}: keys differ')
          out += [f'{rel} {k}: arrays differ' for k in za.files
                  if k in zb.files and not np.array_equal(
                      za[k], zb[k], equal_nan=za[k].dtype.kind == 'f')]
      else:
        with open(os.path.join(reference, rel), 'rb') as fa, open(b,
                                                                  'rb') as fb:
          if fa.read() != fb.read():
            out.append(f'{rel}: bytes differ')
  if _summary_lines(reference) != _summary_lines(other):
    out.append('report/summary.md: lines differ')
  figures = [sorted(os.listdir(os.path.join(w, 'report', 'figures')))
             for w in (reference, other)]
  if figures[0] != figures[1]:
    out.append('report/figures: different files')
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', default='configs/digits_quick.py')
  parser.add_argument('--workdir', default='/tmp/eh_faults')
  parser.add_argument('--kills', type=int, default=20)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--timeout', type=float, default=3600)
  args = parser.parse_args(argv)
  config = os.path.abspath(args.config)
  reference = os.path.join(args.workdir, 'reference')
  killed = os.path.join(args.workdir, 'killed')
  for w in (reference, killed):
    if os.path.exists(w):
      sys.exit(f'{w} exists: pass a fresh --workdir.')
  tick = time.time()
  run_to_end(command(config, reference), args.timeout)
  total = time.time() - tick
  print(f'Reference study: {total:.0f} s.')
  rng = random.Random(args.seed)
  rows = []
  # Kill points are drawn over the reference's output files: run i is
  # killed once the workdir holds its drawn number of files, so the kills
  # land wherever the study writes, whatever the machine's speed.
  total_files = count_files(reference)
  points = sorted(rng.sample(range(1, total_files), min(args.kills,
                                                        total_files - 1)))
  print(f'Kill points: after {points} of {total_files} files.')
  for i, point in enumerate(points):
    row = run_and_kill(command(config, killed),
                       os.path.join(args.workdir, f'kill_{i:02d}.log'),
                       lambda p=point: count_files(killed) >= p, args.timeout)
    row.update(kill=i + 1, newest_file=newest_file(killed))
    rows.append(row)
    print(f"| {row['kill']:>2} | {row['seconds']:>6} s | "
          f"{row['stage']:<13} | {row['newest_file']} |"
          f"{'' if row['killed'] else ' (finished before the kill)'}",
          flush=True)
    if not row['killed']:
      break
  run_to_end(command(config, killed), args.timeout)
  diffs = compare_outputs(reference, killed)
  kills = sum(r['killed'] for r in rows)
  stages = sorted({r['stage'] for r in rows if r['killed']})
  print(f'\n{kills} kills (stages: {", ".join(stages)}); '
        f'{len(diffs)} differences from the uninterrupted run.')
  for d in diffs[:50]:
    print('  ', d)
  return 1 if diffs else 0


if __name__ == '__main__':
  sys.exit(main())
