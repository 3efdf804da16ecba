"""Diagnostics of a held-out estimate against a published C-score file.

  python launch/heldout_diagnostics.py WORKDIR cifar10-cscores-orig-order.npz \\
      [--ratio=0.5] [--key=scores] [--order=original] [--draws=5]

Reads the heldout stage's records and masks of one ratio (WORKDIR/heldout/
r<ratio>/) and prints what docs/heldout.md quotes beside the stage's own
table: Spearman with the published file for random subsets of m members
(does the number of members or their quality limit the estimate?), per-class
Spearman and class means, and the mean held-out probability of the given
label (a continuous variant, not the C-score's 0/1 definition) with its own
between-halves Spearman and AUROC for a published C-score < 0.5.
"""

import argparse
import os
import sys

import numpy as np
from scipy import stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

# pylint: disable=g-import-not-at-top,wrong-import-position
from easyhard_jax.storage import records
from easyhard_jax.analysis import consistency
from easyhard_jax.analysis import label_noise
from easyhard_jax.analysis import reference_order


def _heldout_mean(values, held):
  with np.errstate(invalid='ignore', divide='ignore'):
    return (values * held).sum(0) / held.sum(0)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('workdir')
  p.add_argument('reference')
  p.add_argument('--ratio', type=float, default=0.5)
  p.add_argument('--key', default='scores')
  p.add_argument('--order', default='original')
  p.add_argument('--draws', type=int, default=5)
  args = p.parse_args(argv)
  sub = os.path.join(args.workdir, 'heldout',
                     consistency.ratio_tag(args.ratio))
  progs = sorted(f[len('masks_'):-len('.npz')] for f in os.listdir(sub)
                 if f.startswith('masks_'))
  rec = records.load(sub, 'train', archs=progs)
  correct, loss = rec.correct[:, -1], rec.loss[:, -1].astype(np.float64)
  keep = np.concatenate([np.load(os.path.join(sub, f'masks_{q}.npz'))['keep']
                         for q in progs])
  with np.load(os.path.join(args.workdir, 'heldout', 'scores_train.npz')) as z:
    labels, ids, cs = z['label'], z['tfds_id'], z['cscore']
  with np.load(args.reference) as z:
    published = z[args.key].astype(np.float64)
  ref, _ = reference_order.map_reference(
      args.order, published, None, ids, split_name='train',
      shard_lengths=None, labels=None, example_labels=None)
  m_all = correct.shape[0]
  rng = np.random.default_rng(0)
  print(f'{m_all} members at ratio {args.ratio}; published mean '
        f'{np.nanmean(ref):.3f}, max {np.nanmax(ref):.3f}')
  for m in sorted({2, 4, m_all // 2, 3 * m_all // 4, m_all} - {0}):
    rhos = []
    for _ in range(args.draws if m < m_all else 1):
      sel = rng.permutation(m_all)[:m]
      held = ~keep[sel]
      est = _heldout_mean(correct[sel], held)
      ok = np.isfinite(est) & np.isfinite(ref)
      rhos.append(stats.spearmanr(est[ok], ref[ok]).statistic)
    print(f'members {m}: Spearman with the published file '
          f'{np.mean(rhos):.3f} +- {np.std(rhos):.3f}')
  ok = np.isfinite(cs) & np.isfinite(ref)
  per = [stats.spearmanr(cs[ok & (labels == c)], ref[ok & (labels == c)]
                         ).statistic for c in np.unique(labels)]
  print('per-class Spearman:', np.round(per, 3).tolist())
  for name, v in (('estimate', cs), ('published', ref)):
    means = [np.nanmean(v[labels == c]) for c in np.unique(labels)]
    print(f'{name} class means:', np.round(means, 2).tolist())
  held = ~keep
  p_given = _heldout_mean(np.exp(-loss), held)
  ok = np.isfinite(p_given) & np.isfinite(ref)
  half = np.arange(m_all) % 2 == 0
  a = _heldout_mean(np.exp(-loss[half]), held[half])
  b = _heldout_mean(np.exp(-loss[~half]), held[~half])
  both = np.isfinite(a) & np.isfinite(b)
  print('held-out mean p(given label): Spearman with the published file '
        f'{stats.spearmanr(p_given[ok], ref[ok]).statistic:.3f}, AUROC for '
        'published < 0.5 '
        f'{label_noise.auroc(-p_given[ok], ref[ok] < 0.5):.3f} (0/1 estimate: '
        f'{label_noise.auroc(-cs[ok], ref[ok] < 0.5):.3f}); between halves '
        f'{stats.spearmanr(a[both], b[both]).statistic:.3f}')


if __name__ == '__main__':
  main()
