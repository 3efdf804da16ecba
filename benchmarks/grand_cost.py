"""GraNd throughput against the plain probe pass, side by side in one run.

  python -m benchmarks.grand_cost --config=configs/digits.py \
      --archs=cnn,resnet18 --repeats=3

For each architecture of the config (the digits default: its cnn and
resnet18 at width 1/4, 3 members each), on the train split with the members'
initial states (throughput does not depend on the weights' values):

* ``probe``: ArchTrainer.probe, the eval-mode forward pass of every member
  (batches of config.eval_batch_size), as the records stage runs it;
* ``grand@B``: the after-the-fact pass of probes/grand.grand_fn (a
  per-example gradient per member and example: vmap of grad), batches of B
  (``--grand_batch_sizes``; the checkpoint_probes default is 64).

Each pass runs once to compile, then ``--repeats`` times, timed as a whole
split (results fetched to the host). Prints one JSON line per pass:
examples/s (split examples per second, all members done) and
member-examples/s (times the member count), and the GraNd/probe ratio.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)


def load_config(path: str):
  spec = importlib.util.spec_from_file_location('bench_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def _timed(fn, repeats: int) -> tuple[float, float]:
  """(compile-and-first-run seconds, best of ``repeats`` seconds)."""
  tick = time.perf_counter()
  fn()
  first = time.perf_counter() - tick
  best = float('inf')
  for _ in range(repeats):
    tick = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - tick)
  return first, best


def benchmark(config, archs, repeats: int, grand_batch_sizes) -> list[dict]:
  """Rows of {arch, pass, batch, seconds, examples_per_s, ...}."""
  import jax  # pylint: disable=g-import-not-at-top
  from easyhard_jax.probes import checkpoint_scores  # pylint: disable=g-import-not-at-top
  from easyhard_jax.data import streaming  # pylint: disable=g-import-not-at-top
  from easyhard_jax.train import ensemble  # pylint: disable=g-import-not-at-top
  from easyhard_jax.probes import grand  # pylint: disable=g-import-not-at-top
  data = streaming.load(config)
  n = len(data.train_labels)
  rows = []
  for arch in archs:
    t = ensemble.ArchTrainer(config, data, arch)
    states = t.init_states()
    m = t.num_members
    passes = [('probe', t.probe_batch, lambda: t.probe(states, 'train'))]
    for b in grand_batch_sizes:
      scorer = checkpoint_scores.Scorer(config, data, arch,
                                     {grand.NAME: grand.grand_fn}, b)
      passes.append(('grand', scorer.trainer.probe_batch,
                     lambda s=scorer: s(states, 'train')))
    probe_rate = None
    for name, batch, fn in passes:
      first, best = _timed(fn, repeats)
      rate = n / best
      probe_rate = probe_rate or rate
      row = {'arch': arch, 'pass': name, 'batch': batch, 'members': m,
             'examples': n, 'first_run_s': round(first, 2),
             'best_s': round(best, 3), 'examples_per_s': round(rate, 1),
             'member_examples_per_s': round(rate * m, 1),
             'vs_probe': round(rate / probe_rate, 4),
             'backend': jax.default_backend(),
             'devices': jax.device_count()}
      print(json.dumps(row), flush=True)
      rows.append(row)
  return rows


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default=os.path.join(ROOT, 'configs',
                                                       'digits.py'))
  parser.add_argument('--archs', default='cnn,resnet18')
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--grand_batch_sizes', default='64')
  parser.add_argument('--out', default='', help='Also write the rows (JSON).')
  args = parser.parse_args(argv)
  config = load_config(args.config)
  rows = benchmark(config, [a for a in args.archs.split(',') if a],
                   args.repeats,
                   [int(b) for b in args.grand_batch_sizes.split(',') if b])
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(rows, f, indent=1)


if __name__ == '__main__':
  main()
