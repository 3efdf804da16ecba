"""Every score's detection of known label errors at one window, over runs.

  python launch/label_noise_table.py --window=1,4 \
      --runs='first 20k=/tmp/eh_label_noise/first20k_seed1,...'

For each run (a workdir with train probe and fused records of a study with
known label errors: ``config.label_noise`` or ``config.analysis.known_noisy``,
read from the workdir's config.json), every score is recomputed on the same
records at the same window (analysis/label_noise.py same_window_scores: the
probe scores over the window's probes, the training-pass scores over the
window's epochs, the label-issue score in both calibrations), and its AUROC
and precision at k (k = known errors) measured. Runs are grouped by setting
(the text before '='); the table gives mean +- sd over each setting's runs
(sd with ddof=1) and over all runs, best AUROC first. launch/
label_noise_table.sh records the runs and calls this.

``--make_slice=PATH --slice_start=A --slice_stop=B`` instead writes an npz
of Fashion-MNIST train examples A..B-1 and the full test split (for
``config.dataset='npz'``).
"""

from __future__ import annotations

import json
import os
import sys

from absl import app
from absl import flags
import ml_collections
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from easyhard_jax.storage import records as records_lib
from easyhard_jax.analysis import label_noise
from easyhard_jax.analysis import scores as scores_lib
# pylint: enable=g-import-not-at-top,wrong-import-position

_RUNS = flags.DEFINE_string('runs', '', "'setting=workdir,...'.")
_WINDOW = flags.DEFINE_string('window', '1,4', 'lo,hi epochs (lo < e <= hi).')
_JSON = flags.DEFINE_string('json', '', 'Also write the table here.')
_MAKE_SLICE = flags.DEFINE_string('make_slice', '', 'Write an npz slice.')
_START = flags.DEFINE_integer('slice_start', 20000, 'First train example.')
_STOP = flags.DEFINE_integer('slice_stop', 40000, 'Train example after last.')


def make_slice(path: str, start: int, stop: int) -> None:
  """Writes Fashion-MNIST train examples start..stop-1 and the test split."""
  from configs import fashion_mnist  # pylint: disable=g-import-not-at-top
  from easyhard_jax.data import sources  # pylint: disable=g-import-not-at-top
  c = fashion_mnist.get_config()
  c.max_train_examples = 0
  ds = sources.load_dataset(c)
  if not 0 <= start < stop <= len(ds.train_labels):
    raise ValueError(f'slice {start}..{stop} outside 0..'
                     f'{len(ds.train_labels)}')
  tmp = path + '.tmp.npz'
  np.savez(tmp, x_train=ds.train_images[start:stop],
           y_train=ds.train_labels[start:stop], x_test=ds.test_images,
           y_test=ds.test_labels)
  os.replace(tmp, path)
  print(f'wrote {path}: train {start}..{stop - 1}, '
        f'{len(ds.test_labels)} test examples')


def run_scores(workdir: str, window: tuple[float, float]) -> dict:
  """{score: {'auroc', 'precision_at_k'}} of one workdir at ``window``."""
  with open(os.path.join(workdir, 'config.json')) as f:
    config = ml_collections.ConfigDict(json.load(f))
  rec = records_lib.load(workdir, 'train', source='probe')
  fused = scores_lib.load_fused(workdir, rec)
  n = len(rec.labels)
  noisy, source = label_noise.known_noisy(config, n)
  if noisy is None:
    raise ValueError(f'{workdir}: no known label errors ({source}).')
  num_classes = int(np.max(rec.labels)) + 1
  hard = label_noise.same_window_scores(rec, fused, window, num_classes)
  positive = np.zeros(n, bool)
  positive[noisy] = True
  k = int(positive.sum())
  return {name: {'auroc': label_noise.auroc(h, positive),
                 'precision_at_k': label_noise.precision_at_k(h, positive, k)}
          for name, h in hard.items()} | {'_k': k, '_source': source}


def _fmt(values: list[float]) -> str:
  v = np.asarray(values, np.float64)
  if v.size < 2:
    return f'{v.mean():.4f}'
  return f'{v.mean():.4f} +- {v.std(ddof=1):.4f}'


def table(results: dict[str, list[dict]], window) -> str:
  """Markdown tables: one per setting, then all runs together."""
  groups = dict(results)
  if len(groups) > 1:
    groups['all runs'] = [r for rs in results.values() for r in rs]
  out = []
  for setting, runs in groups.items():
    names = [n for n in runs[0] if not n.startswith('_')]
    names.sort(key=lambda n: -np.mean([r[n]['auroc'] for r in runs]))
    out.append(f'\n{setting}: {len(runs)} run(s), window ({window[0]:g}, '
               f'{window[1]:g}] epochs, k = '
               f"{', '.join(str(r['_k']) for r in runs)}\n")
    out.append('| score | AUROC | precision at k |')
    out.append('|---|---|---|')
    for n in names:
      out.append(f"| {n} | {_fmt([r[n]['auroc'] for r in runs])} | "
                 f"{_fmt([r[n]['precision_at_k'] for r in runs])} |")
  return '\n'.join(out)


def main(argv):
  del argv
  if _MAKE_SLICE.value:
    make_slice(_MAKE_SLICE.value, _START.value, _STOP.value)
    return
  window = tuple(float(x) for x in _WINDOW.value.split(','))
  results: dict[str, list[dict]] = {}
  for item in filter(None, _RUNS.value.split(',')):
    setting, workdir = item.split('=', 1)
    results.setdefault(setting, []).append(run_scores(workdir, window))
  print(table(results, window))
  if _JSON.value:
    with open(_JSON.value, 'w') as f:
      json.dump({'window': window, 'runs': results}, f, indent=1)


if __name__ == '__main__':
  app.run(main)
