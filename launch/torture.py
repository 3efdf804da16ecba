"""Corrupt, misconfigure and race a study; print what held (issue 20).

  python launch/torture.py --workdir=/tmp/eh_torture   [--cases=A,B] [--list]

Runs configs/digits_quick.py once (the reference), then each case (corruption,
config change, typo, bad input, concurrency, two processes) against a copy or
a fresh workdir; prints (case, kind, expected, observed, held), exits 0 iff
all held. tests/test_torture.py runs the reference-free cases in-process.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Callable

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (ROOT, HERE):
  if _p not in sys.path:
    sys.path.insert(0, _p)

# pylint: disable=g-import-not-at-top,wrong-import-position
import fault_injection
from easyhard_jax.storage.files import atomic_write_json as atomic_json
# pylint: enable=g-import-not-at-top,wrong-import-position

CONFIG = os.path.join(ROOT, 'configs', 'digits_quick.py')


def flag(dotted: str, value: Any) -> str:
  """``--config.a.b=value`` as ml_collections parses it (tuples too)."""
  if isinstance(value, tuple):
    value = '(' + ','.join(map(str, value)) + ')'
  return f'--config.{dotted}={value}'


class Context:
  """Where the cases run, and how a case invokes the study.

  ``inprocess=True`` (the test suite) calls ``runner.run`` in this process,
  an error giving rc 1 and its message as the log; otherwise each invocation
  is ``python -m easyhard_jax.main`` in a subprocess.
  """

  def __init__(self, root: str, reference: str | None = None,
               config: str = CONFIG, timeout: float = 900,
               inprocess: bool = False):
    self.root, self.reference, self.config = root, reference, config
    self.timeout, self.inprocess = timeout, inprocess
    os.makedirs(root, exist_ok=True)

  def path(self, name: str) -> str:
    return os.path.join(self.root, name)
  def run(self, workdir: str, overrides: dict[str, Any] | None = None,
          mode: str = 'study') -> tuple[int, str]:
    """(exit code, log) of one invocation."""
    overrides = overrides or {}
    if self.inprocess:
      return self._run_here(workdir, overrides, mode)
    cmd = fault_injection.command(self.config, workdir) + [
        f'--mode={mode}'] + [flag(k, v) for k, v in overrides.items()]
    out = subprocess.run(cmd, cwd=ROOT, env=fault_injection.env(),
                         capture_output=True, text=True,
                         timeout=self.timeout, check=False)
    return out.returncode, out.stdout + out.stderr

  def _run_here(self, workdir, overrides, mode):
    # pylint: disable-next=g-import-not-at-top
    from easyhard_jax import runner
    spec = importlib.util.spec_from_file_location('torture_cfg', self.config)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    for key, value in overrides.items():
      *parents, last = key.split('.')
      target = config
      for p in parents:
        target = target[p]
      target[last] = value
    try:
      runner.run(config, workdir, mode)
    except Exception as e:  # pylint: disable=broad-except
      return 1, f'{type(e).__name__}: {e}'
    return 0, ''

  def finished(self, name: str) -> str:
    """A copy of the reference, or a finished-looking stand-in without one."""
    dest = self.path(name)
    shutil.rmtree(dest, ignore_errors=True)
    if self.reference:
      shutil.copytree(self.reference, dest, symlinks=True)
      return dest
    for d in ('analysis', 'exports', 'removal'):
      os.makedirs(os.path.join(dest, d))
      with open(os.path.join(dest, d, 'results.json'), 'w') as f:
        f.write('{"kept": true}')
    return dest


@dataclasses.dataclass(frozen=True)
class Case:
  name: str
  kind: str
  expected: str
  check: Callable[[Context], tuple[bool, str]]
  needs_reference: bool = True


def snapshot(workdir: str) -> dict[str, tuple[int, int]]:
  """{path: (size, mtime_ns)} of everything under ``workdir``."""
  out = {}
  for d, _, names in os.walk(workdir):
    for n in names:
      st = os.lstat(os.path.join(d, n))
      out[os.path.relpath(os.path.join(d, n), workdir)] = (st.st_size,
                                                           st.st_mtime_ns)
  return out


def records_diff(reference: str, other: str, tol: float = 0.0) -> str:
  """'' when the records agree (exactly, or losses within ``tol``)."""
  # pylint: disable-next=g-import-not-at-top
  from easyhard_jax.storage import records
  try:
    pairs = [(records.load(w, s, src) for w in (reference, other))
             for s, src in (('train', 'probe'), ('test', 'probe'),
                            ('train', 'fused'))]
    for (a, b), what in zip(pairs, ('train probe', 'test probe', 'fused')):
      if not np.array_equal(a.probe_steps, b.probe_steps):
        return f'{what}: probe steps differ'
      close = (np.array_equal(a.loss, b.loss, equal_nan=True) if not tol
               else np.allclose(a.loss, b.loss, rtol=tol, atol=tol,
                                equal_nan=True))
      if not close:
        return f'{what}: losses differ by {np.nanmax(abs(a.loss - b.loss)):.2g}'
  except (OSError, ValueError, KeyError) as e:
    return f'unreadable: {e}'
  return ''


def _flip_bit(path: str) -> None:
  data = bytearray(open(path, 'rb').read())
  data[len(data) // 2] ^= 0x01  # Inside the data, past any header.
  with open(path, 'wb') as f:
    f.write(bytes(data))


def _manifest(workdir: str) -> tuple[str, dict[str, Any]]:
  path = os.path.join(workdir, 'records', 'manifest.json')
  with open(path) as f:
    return path, json.load(f)


def _repaired(ctx: Context, w: str, mode: str = 'records',
              needle: str = '') -> tuple[bool, str]:
  """Reruns ``mode``; held iff it exits 0 with the reference's records."""
  rc, log = ctx.run(w, mode=mode)
  diff = records_diff(ctx.reference, w) if rc == 0 else log[-300:]
  warned = not needle or needle in log
  return (rc == 0 and not diff and warned,
          f'rc {rc}; records {"equal" if not diff else diff}'
          f'{"" if warned else f"; no {needle!r} in the log"}')


def checkpoint_bit_flip(ctx):
  w = ctx.finished('checkpoint_bit_flip')
  path, m = _manifest(w)
  m['archs']['cnn']['complete'] = False
  atomic_json(path, m)
  ckpt = os.path.join(w, 'checkpoints', 'cnn')
  last = max(int(n) for n in os.listdir(ckpt) if n.isdigit())
  _flip_bit(max(glob.glob(os.path.join(ckpt, str(last), '**', 'd', '*'),
                          recursive=True), key=os.path.getsize))
  return _repaired(ctx, w, needle='cannot be used')


def chunk_bit_flip(ctx):
  w = ctx.finished('chunk_bit_flip')
  _flip_bit(os.path.join(w, 'records', 'cnn', 'probe_train_0001.npz'))
  return _repaired(ctx, w, needle='re-recording')


def manifest_wrong_shape(ctx):
  w = ctx.finished('manifest_wrong_shape')
  atomic_json(_manifest(w)[0], {'archs': {'cnn': 5}})
  held, seen = _repaired(ctx, w)
  kept = os.path.exists(os.path.join(w, 'records', 'manifest.damaged.json'))
  return held and kept, seen + ('; damaged manifest set aside' if kept else '')


def manifest_lost_chunks(ctx):
  w = ctx.finished('manifest_lost_chunks')
  path, m = _manifest(w)
  del m['archs']['cnn']['chunks']['probe_test']['1']
  atomic_json(path, m)
  return _repaired(ctx, w)


def analysis_json_damaged(ctx):
  w = ctx.finished('analysis_json_damaged')
  with open(os.path.join(w, 'analysis', 'analysis.json'), 'w') as f:
    f.write('{"records": ')
  rc, log = ctx.run(w)
  diffs = fault_injection.compare_outputs(ctx.reference, w) if rc == 0 else [
      log[-300:]]
  return rc == 0 and not diffs, (f'rc {rc}; {len(diffs)} differences from '
                                 'the reference' + (f' ({diffs[0]})'
                                                    if diffs else ''))


def config_json_damaged(ctx):
  w = ctx.finished('config_json_damaged')
  with open(os.path.join(w, 'config.json'), 'w') as f:
    f.write('{"dataset": ')
  rc, log = ctx.run(w, mode='report')
  return rc == 0, f'rc {rc}' + ('' if rc == 0 else f': {log[-200:]}')


def window_change(ctx):
  w = ctx.finished('window_change')
  rc, log = ctx.run(w, {'analysis.window': (0.0, 2.0)})
  ran = [s for s in ('records', 'analysis', 'removal', 'compression', 'report')
         if f'Stage {s} starting' in log]
  with open(os.path.join(w, 'analysis', 'analysis.json')) as f:
    window = json.load(f).get('config', {}).get('window')
  return (rc == 0 and ran == ['analysis', 'removal', 'compression', 'report'],
          f'rc {rc}; reran {ran}; analysis window {window}')


def lr_change_refused(ctx):
  w = ctx.finished('lr_change_refused')
  before = snapshot(os.path.join(w, 'records'))
  rc, log = ctx.run(w, {'optimizer.learning_rate': 0.05}, mode='records')
  same = snapshot(os.path.join(w, 'records')) == before
  named = 'learning_rate' in log and 'new --workdir' in log
  return (rc != 0 and same and named,
          f'rc {rc}; records {"untouched" if same else "CHANGED"}; '
          f'{"names the field" if named else "message: " + log[-150:]}')


def _typo(overrides, needle, mode='study', setup=None):
  """A case: the run stops naming ``needle``; the workdir is untouched."""
  def check(ctx):
    w = ctx.finished('typo')
    extra = setup(ctx) if setup else {}
    before = snapshot(w)
    rc, log = ctx.run(w, {**overrides, **extra}, mode=mode)
    same = snapshot(w) == before
    named = needle in log
    return (rc != 0 and same and named,
            f'rc {rc}; workdir {"untouched" if same else "CHANGED"}; '
            f'{"names " + needle if named else "message: " + log[-150:]}')
  return check


def _noisy_file(ctx):
  path = ctx.path('noisy.txt')
  with open(path, 'w') as f:
    f.write('3 17 forty-two\n')
  return {'analysis.known_noisy': path}


def _npz(ctx, name, **arrays):
  path = ctx.path(name)
  rng = np.random.default_rng(0)
  base = dict(x_train=rng.integers(0, 255, (64, 8, 8), np.uint8),
              y_train=np.arange(64) % 10,
              x_test=rng.integers(0, 255, (16, 8, 8), np.uint8),
              y_test=np.arange(16) % 10)
  np.savez(path, **{**base, **arrays})
  return path


def _bad_input(make, needle, mode='records'):
  """A case: a fresh workdir; the run fails naming ``needle``."""
  def check(ctx):
    w = ctx.path('bad_input')
    shutil.rmtree(w, ignore_errors=True)
    overrides, workdir = make(ctx, w)
    rc, log = ctx.run(workdir, overrides, mode=mode)
    named = needle in log
    return (rc != 0 and named, f'rc {rc}; '
            f'{"names " + needle if named else "message: " + log[-150:]}')
  return check


def _object_npz(ctx, w):
  path = _npz(ctx, 'objects.npz', y_train=np.array([1, 'a'] * 32, object))
  return {'dataset': 'npz', 'npz_path': path}, w


def _garbage_npz(ctx, w):
  path = ctx.path('garbage.npz')
  with open(path, 'wb') as f:
    f.write(b'\x00not a zip' * 40)
  return {'dataset': 'npz', 'npz_path': path}, w


def _wrapped_labels(ctx, w):
  y = (np.arange(64) % 10).astype(np.int64)
  y[3] += 2**32
  return {'dataset': 'npz', 'npz_path': _npz(ctx, 'wrap.npz', y_train=y)}, w


def _dangling(ctx, w):
  link = ctx.path('dangling')
  if os.path.lexists(link):
    os.remove(link)
  os.symlink(ctx.path('nowhere'), link)
  return {}, link


def second_run_refused(ctx):
  w = ctx.path('second_run')
  shutil.rmtree(w, ignore_errors=True)
  cmd = fault_injection.command(ctx.config, w) + ['--mode=records']
  first = subprocess.Popen(cmd, cwd=ROOT, env=fault_injection.env(),
                           stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
  try:
    deadline, lock = time.time() + 120, os.path.join(w, '.lock')
    locked = lambda: os.path.exists(lock) and os.path.getsize(lock) > 0
    while time.time() < deadline and not locked():
      time.sleep(0.05)
    rc, log = ctx.run(w, mode='records')
  finally:
    if first.poll() is None:
      os.kill(first.pid, signal.SIGKILL)
    first.wait()
  named = 'Another run is using this workdir' in log
  return rc != 0 and named, f'rc {rc}; {"refused" if named else log[-150:]}'


def _two_processes(ctx, workdir, mode):
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  env = fault_injection.env()
  env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') +
                      ' --xla_force_host_platform_device_count=2').strip()
  procs = [subprocess.Popen(
      fault_injection.command(ctx.config, workdir) + [
          f'--mode={mode}',
          flag('distributed.coordinator_address', f'127.0.0.1:{port}'),
          flag('distributed.num_processes', 2),
          flag('distributed.process_id', i)],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True) for i in (0, 1)]
  try:
    logs = [p.communicate(timeout=ctx.timeout)[0] for p in procs]
  except subprocess.TimeoutExpired:
    logs = ['timed out', 'timed out']
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  return [p.returncode for p in procs], logs


def two_process_record(ctx):
  # Against one process on the same 4 devices (reduction order alone moves
  # multi-epoch losses against one device: docs/scale.md).
  one = ctx.path('one_process_4_devices')
  shutil.rmtree(one, ignore_errors=True)
  env = dict(fault_injection.env(),
             XLA_FLAGS='--xla_force_host_platform_device_count=4')
  ref = subprocess.run(fault_injection.command(ctx.config, one) + [
      '--mode=records'], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=ctx.timeout, check=False)
  w = ctx.path('two_process_record')
  rcs, logs = _two_processes(ctx, w, 'records')
  diff = records_diff(one, w, tol=1e-4) if rcs == [0, 0] and (
      ref.returncode == 0) else (logs[0][-200:] or ref.stderr[-200:])
  return rcs == [0, 0] and not diff, (
      f'rc {rcs}; records {"equal within 1e-4" if not diff else diff}')


def two_process_compress(ctx):
  w = ctx.finished('two_process_compress')
  shutil.rmtree(os.path.join(w, 'compression'))
  rcs, logs = _two_processes(ctx, w, 'compression')
  ok = os.path.exists(os.path.join(w, 'compression', 'results.json'))
  return rcs == [0, 0] and ok, f'rc {rcs}; {"written" if ok else logs[1][-99:]}'


CASES = (
    Case('checkpoint_bit_flip', 'corruption', 'falls back to the previous '
         'checkpoint; records equal', checkpoint_bit_flip),
    Case('chunk_bit_flip', 'corruption', 're-records the chunk; records '
         'equal', chunk_bit_flip),
    Case('manifest_wrong_shape', 'corruption', 'manifest rebuilt from the '
         'chunks; records equal', manifest_wrong_shape),
    Case('manifest_lost_chunks', 'corruption', 'lost chunks re-recorded; '
         'records equal', manifest_lost_chunks),
    Case('analysis_json_damaged', 'corruption', 'analysis reruns; outputs '
         'equal the reference', analysis_json_damaged),
    Case('config_json_damaged', 'corruption', 'report still builds',
         config_json_damaged),
    Case('window_change', 'config change', 'analysis and later stages rerun',
         window_change),
    Case('lr_change_refused', 'config change', 'refused naming the field; '
         'records untouched', lr_change_refused),
) + tuple(
    Case(f'typo_{name}', 'typo', 'refused first, nothing deleted',
         _typo(*args), False) for name, args in (
             ('sets_method', ({'analysis.sets.method': 'bogus'},
                              'sets.method')),
             ('block_size', ({'analysis.similarity.block_size': 0},
                             'block_size')),
             ('window_past_end', ({'analysis.window': (5.0, 6.0)},
                                  'holds no probe')),
             ('known_noisy', ({}, 'known_noisy', 'study', _noisy_file)),
             ('ci_level', ({'analysis.agreement.ci_level': 1.5}, 'ci_level')),
             ('seed_overflow', ({'seed': 2**32}, 'config.seed')),
             ('width_inf', ({'width': float('inf')}, 'config.width')),
             ('seeds_memory', ({'seeds_per_arch': 10**9}, 'seeds_per_arch')),
         )) + (
    Case('npz_object_labels', 'bad input', 'names the file',
         _bad_input(_object_npz, 'objects.npz'), False),
    Case('npz_garbage', 'bad input', 'names the file',
         _bad_input(_garbage_npz, 'garbage.npz'), False),
    Case('npz_labels_2**32+y', 'bad input', 'refused, not wrapped',
         _bad_input(_wrapped_labels, 'below 2**31'), False),
    Case('dangling_symlink_workdir', 'bad input', 'names the link',
         _bad_input(_dangling, 'is a symbolic link'), False),
    Case('second_run_refused', 'concurrency', 'second run refused',
         second_run_refused, False),
    Case('two_process_record', 'two processes', 'records equal the '
         'one-process run on 4 devices', two_process_record),
    Case('two_process_compress', 'two processes', 'both exit 0, results '
         'written', two_process_compress),
)


def run_cases(ctx: Context, cases) -> list[dict[str, Any]]:
  """Runs ``cases``; one row each (a case that raises did not hold)."""
  rows = []
  for case in cases:
    tick = time.time()
    try:
      held, observed = case.check(ctx)
    except Exception as e:  # pylint: disable=broad-except
      held, observed = False, f'harness error {type(e).__name__}: {e}'
    rows.append({'case': case.name, 'kind': case.kind,
                 'expected': case.expected, 'observed': observed,
                 'held': held, 'seconds': round(time.time() - tick, 1)})
    print(f"| {case.name} | {case.kind} | {case.expected} | {observed} | "
          f"{'held' if held else 'FAILED'} |", flush=True)
  return rows


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', default='/tmp/eh_torture')
  parser.add_argument('--config', default=CONFIG)
  parser.add_argument('--cases', default='')
  parser.add_argument('--timeout', type=float, default=900)
  parser.add_argument('--list', action='store_true')
  args = parser.parse_args(argv)
  cases = [c for c in CASES if not args.cases or c.name in
           args.cases.split(',')]
  if args.list:
    return print('\n'.join(f'{c.name:28s} {c.kind:14s} {c.expected}'
                           for c in cases)) or 0
  if os.path.exists(args.workdir):
    sys.exit(f'{args.workdir} exists: pass a fresh --workdir.')
  reference = os.path.join(args.workdir, 'reference')
  ctx = Context(args.workdir, None, os.path.abspath(args.config),
                args.timeout)
  if any(c.needs_reference for c in cases):
    tick = time.time()
    fault_injection.run_to_end(fault_injection.command(ctx.config, reference),
                               args.timeout)
    ctx.reference = reference
    print(f'Reference study: {time.time() - tick:.0f} s.')
  print('| case | kind | expected | observed | held |\n|---|---|---|---|---|')
  rows = run_cases(ctx, cases)
  held = sum(r['held'] for r in rows)
  print(f'\n{held} of {len(rows)} cases held.')
  with open(os.path.join(args.workdir, 'table.json'), 'w') as f:
    json.dump(rows, f, indent=1)
  return 0 if held == len(rows) else 1


if __name__ == '__main__':
  sys.exit(main())
