"""Prints a study workdir's results as the Markdown tables of docs/results.md.

  python launch/results_table.py WORKDIR [--reference_below=0.5]

Reads only what the stages wrote (records, report/summary.md,
exports/scores_train.npz, analysis/analysis.json, compare/aligned.npz), so a
table in the docs is regenerated from the code that ships by rerunning its
study and this script (``launch/results.sh`` does both). Sections, each only
where its input exists:

1. every member's accuracy at the last probe (train and test), so each
   table below is read beside the quality of the judges;
2. the report's headline findings (summary.md);
3. every score against the published reference of ``--mode=compare``:
   Spearman, AUROC of hardness for reference < ``--reference_below`` (the
   C-score's "hard" examples), its per-class range, and the reference's
   own hard-tail AUROCs from compare/results.csv;
4. label errors against the known ones (config.train_labels, label_noise):
   every score's AUROC and precision at k, from analysis.json; with
   ``--test_label_errors``, the test split against cleanlab's confirmed
   CIFAR-10 test errors;
5. the cause probes against their reseed control, and the removal and
   compression sweeps' test accuracy per strategy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

# pylint: disable=g-import-not-at-top,wrong-import-position
from easyhard_jax.storage import records
from easyhard_jax.analysis import label_noise
from easyhard_jax.analysis import scores as scores_lib


def _fmt(x, spec='.3f'):
  """x formatted, '-' for None, '' (an empty CSV cell), NaN or inf."""
  if x is None or x == '':
    return '-'
  x = float(x)
  return '-' if not np.isfinite(x) else format(x, spec)


def _read_json(workdir: str, *parts: str):
  """The JSON file WORKDIR/parts..., or None when it is absent."""
  path = os.path.join(workdir, *parts)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def members_table(workdir: str) -> list[str]:
  """Accuracy of every member at its last probe, train and test."""
  acc = {}
  for split in ('train', 'test'):
    try:
      rec = records.load(workdir, split=split)
    except (FileNotFoundError, ValueError):
      continue
    last = rec.correct[:, -1, :].mean(axis=1)
    for m, a in zip(rec.members, last):
      acc.setdefault(m.get('name', str(m)), {})[split] = a
    epoch = float(rec.probe_epochs[-1])
  if not acc:
    return []
  lines = [f'Members at their last probe (epoch {epoch:g}):', '',
           '| member | train accuracy | test accuracy |', '|---|---|---|']
  lines += [f"| {name} | {_fmt(a.get('train'))} | {_fmt(a.get('test'))} |"
            for name, a in acc.items()]
  return lines + ['']


def findings(workdir: str) -> list[str]:
  """The report's summary blocks (findings, cause probes, reference, ...)."""
  path = os.path.join(workdir, 'report', 'summary.md')
  if not os.path.exists(path):
    return []
  with open(path) as f:
    blocks = f.read().split('\n## ')[1:]
  lines = []
  for block in blocks:
    title, _, body = block.partition('\n')
    body = body.strip()
    if title.strip() in ('Later stages', 'Sections') or not body:
      continue
    lines += [f'{title.strip()} (report/summary.md):', '', body, '']
  return lines


def _scores(workdir: str) -> dict[str, np.ndarray]:
  with np.load(os.path.join(workdir, 'exports', 'scores_train.npz'),
               allow_pickle=False) as z:
    return {k: z[k] for k in z.files}


def _hardness(values: np.ndarray, name: str) -> np.ndarray | None:
  if scores_lib.orientation(name) == scores_lib.NEITHER:
    return None
  return -np.asarray(scores_lib.easier_key(values, name), np.float64)


def reference_table(workdir: str, below: float) -> list[str]:
  """Every score against compare/aligned.npz's reference."""
  path = os.path.join(workdir, 'compare', 'aligned.npz')
  if not os.path.exists(path):
    return []
  from scipy import stats
  with np.load(path, allow_pickle=False) as z:
    ref, labels = z['reference'].astype(np.float64), z['label']
  scores = _scores(workdir)
  ok = np.isfinite(ref)
  hard_ref = ok & (ref < below)
  lines = [f'Against the published reference ({int(ok.sum())} examples; '
           f'{int(hard_ref.sum())} with reference < {below:g}, '
           f'{100 * hard_ref.sum() / ok.sum():.1f}%). Spearman: the score '
           'oriented easier-is-higher against the reference; AUROC: '
           f'hardness for reference < {below:g} (chance 0.5), overall and '
           'the range over classes.', '',
           '| score | Spearman | AUROC (ref < %g) | per-class AUROC min-max |'
           % below, '|---|---|---|---|']
  rows = []
  for name in sorted(scores):
    if name.split('/')[0] not in scores_lib.SCORE_NAMES:
      continue
    hard = _hardness(scores[name], name)
    if hard is None:
      continue
    use = ok & np.isfinite(hard)
    if use.sum() < 3:
      continue
    rho = stats.spearmanr(-hard[use], ref[use]).statistic
    auc = label_noise.auroc(hard[use], hard_ref[use])
    per = [label_noise.auroc(hard[use & (labels == c)],
                             hard_ref[use & (labels == c)])
           for c in np.unique(labels)]
    per = [p for p in per if np.isfinite(p)]
    rows.append((auc, f'| {name} | {_fmt(rho)} | {_fmt(auc)} | '
                 f'{_fmt(min(per) if per else None)}-'
                 f'{_fmt(max(per) if per else None)} |'))
  rows.sort(key=lambda r: -r[0] if np.isfinite(r[0]) else 1)
  return lines + [r for _, r in rows] + ['']


def label_error_table(workdir: str) -> list[str]:
  """Every score's AUROC and precision at k for the known label errors."""
  a = _read_json(workdir, 'analysis', 'analysis.json')
  if a is None:
    return []
  noise = a.get('label_noise')
  if not noise or 'scores' not in noise:
    return []
  lines = [f"Known label errors: {noise['known_noisy']} of "
           f"{noise['examples']} ({noise['source']}); precision at k = "
           f"{noise['k']} (chance {noise['known_noisy'] / noise['examples']:.3f}"
           ').', '', '| score | AUROC | precision at k |', '|---|---|---|']
  rows = sorted(noise['scores'].items(),
                key=lambda kv: -(kv[1].get('auroc') or 0))
  lines += [f"| {name} | {_fmt(s.get('auroc'))} | "
            f"{_fmt(s.get('precision_at_k'))} |" for name, s in rows]
  return lines + ['']


def test_error_table(workdir: str, mturk_json: str) -> list[str]:
  """Every test-split score against cleanlab's confirmed CIFAR-10 test errors.

  ``mturk_json`` is cleanlab/label-errors' ``mturk/cifar10_mturk.json``: the
  candidate errors by original test index, each with how many of 5 workers
  kept the given label; fewer than 3 = a confirmed error (54 of 275).
  """
  from easyhard_jax.data import cifar_binary
  with open(mturk_json) as f:
    entries = json.load(f)
  confirmed = np.asarray([e['id'] for e in entries
                          if e['mturk']['given'] < 3], np.int64)
  path = os.path.join(workdir, 'exports', 'scores_test.npz')
  with np.load(path, allow_pickle=False) as z:
    scores = {k: z[k] for k in z.files}
  n = scores['label'].size
  # Original test index -> TFDS's stored position (the records' index).
  position = np.argsort(cifar_binary.tfds_permutation(n, 'test'))
  positive = np.zeros(n, bool)
  positive[position[confirmed]] = True
  k = int(positive.sum())
  lines = [f"cleanlab's confirmed test label errors: {k} of {n} (chance "
           f'{k / n:.4f}); AUROC and precision at k = {k} of every test score '
           '(hardness = more suspect).', '',
           '| score | AUROC | precision at k |', '|---|---|---|']
  rows = []
  for name in sorted(scores):
    if name.split('/')[0] not in scores_lib.SCORE_NAMES:
      continue
    hard = _hardness(scores[name], name)
    if hard is None or not np.isfinite(hard).any():
      continue
    rows.append((label_noise.auroc(hard, positive),
                 label_noise.precision_at_k(hard, positive, k), name))
  rows.sort(key=lambda r: -r[0] if np.isfinite(r[0]) else 1)
  lines += [f'| {name} | {_fmt(a)} | {_fmt(p)} |' for a, p, name in rows]
  return lines + ['']


def causes_table(workdir: str) -> list[str]:
  """causes/results.csv: every probe against the reseed control (z scores)."""
  from easyhard_jax.storage import files
  path = os.path.join(workdir, 'causes', 'results.csv')
  if not os.path.exists(path):
    return []
  figures = ('easy_overlap_ratio', 'hard_overlap_ratio', 'spearman_easiness',
             'cross_arch_easy_ratio')
  lines = ['Cause probes against the reseed control (value, z; the control: '
           'mean +- seed spread; departures Holm-corrected over the family '
           'of verdicts, causes/results.json "verdicts"):', '',
           '| probe | window probes | easy overlap / chance | hard overlap / '
           'chance | easiness Spearman | cross-arch easy / chance | test acc '
           '| departs in |', '|---|---|---|---|---|---|---|---|']
  for r in files.read_csv(path):
    if r['variant'] == 'reseed':
      cells = [f"{_fmt(r['control_' + f], '.2f')} +- "
               f"{_fmt(r['control_' + f + '_spread'], '.2f')}"
               for f in figures]
    else:
      cells = [f"{_fmt(r[f], '.2f')} (z {_fmt(r['z_' + f], '+.2f')})"
               for f in figures]
    lines.append(f"| {r['variant']} | {r['window_probes']} | "
                 + ' | '.join(cells) + f" | {_fmt(r['test_acc_mean'])} | "
                 f"{r['departs_from_control'] or '-'} |")
  return lines + ['']


def sweep_tables(workdir: str) -> list[str]:
  """removal/ and compression/ results.csv: test accuracy per strategy."""
  from easyhard_jax.storage import files
  lines = []
  for stage in ('removal', 'compression'):
    path = os.path.join(workdir, stage, 'results.csv')
    if not os.path.exists(path):
      continue
    rows = [r for r in files.read_csv(path) if r.get('test_acc_mean')]
    strategies = list(dict.fromkeys(r['strategy'] for r in rows))
    fractions = list(dict.fromkeys(r['fraction'] for r in rows))
    cell = {(r['fraction'], r['strategy']):
            f"{float(r['test_acc_mean']):.3f} +- "
            f"{float(r['test_acc_std'] or 'nan'):.3f}" for r in rows}
    lines += [f'{stage} (test accuracy, mean +- sd over seeds):', '',
              '| fraction | ' + ' | '.join(strategies) + ' |',
              '|---' * (len(strategies) + 1) + '|']
    lines += [f'| {f} | ' + ' | '.join(cell.get((f, s), '-')
                                       for s in strategies) + ' |'
              for f in fractions]
    lines.append('')
  return lines


def _tail(res, i=0):
  """(AUROC, top-k overlap / chance) of a compare_one tail, as text."""
  tails = res.get('tails') or []
  if len(tails) <= i:
    return '-', '-'
  t = tails[i]
  return _fmt(t.get('auroc')), _fmt((t.get('top_k') or {}).get('ratio'), '.2f')


def heldout_table(workdir: str) -> list[str]:
  """heldout/results.json: the estimate, its ceiling, proxies, reference."""
  r = _read_json(workdir, 'heldout', 'results.json')
  if r is None:
    return []
  frac = (r.get('hard_tail_fractions') or [0.05])[0]
  lines = [f"Held-out ground truth: {', '.join(r['archs'])}, "
           f"{r['members_per_ratio_and_arch']} members per ratio, "
           f"{r['epochs']} epochs, {r['num_train']} training examples "
           '(heldout/results.json).', '',
           '| ratio | members | held out per example (expected / mean / '
           'min) | never held out | mean consistency | mean se (plug-in / '
           "worst case) | members' test acc |", '|---|---|---|---|---|---|---|']
  for c in r['counts']:
    tag = next((t for t in r['test_accuracy']
                if abs(float(t[1:]) - c['ratio']) < 1e-9), None)
    lines.append(
        f"| {c['ratio']:g} | {c['members']} | "
        f"{c['expected_heldout_per_example']:.1f} / "
        f"{c['heldout_count_mean']:.2f} / {c['heldout_count_min']} | "
        f"{c['never_heldout']} | {_fmt(c['consistency_mean'])} | "
        f"{_fmt(c['consistency_se_mean'])} / "
        f"{_fmt(c['worst_case_se_mean'])} | "
        f"{_fmt(r['test_accuracy'].get(tag)) if tag else '-'} |")
  cs, ceil = r['cscore'], r['ceiling']
  lines += ['', f"C-score estimate: {cs['examples']} examples "
            f"({cs['missing']} never held out), mean {_fmt(cs['mean'])}, "
            f"{cs['below_half']} below 0.5, mean se {_fmt(cs['se_mean'])}; "
            f"memorization mean {_fmt(r.get('memorization_mean'))}.", '']
  if 'skipped' not in ceil:
    auc, ovl = _tail(ceil)
    lines += [f"Ceiling (one half of the members against the other): "
              f"Spearman {_fmt(ceil.get('spearman'))}, Spearman-Brown "
              f"{_fmt(ceil.get('spearman_brown'))}, a perfect proxy's "
              f"Spearman {_fmt(ceil.get('perfect_proxy_spearman'))}; AUROC "
              f"for C-score < 0.5 "
              f"{_fmt((ceil.get('below_half') or {}).get('auroc'))}; "
              f"hardest {frac:g}: AUROC {auc}, top-k overlap {ovl}x chance.",
              '']
  proxies = r.get('proxies') or {}
  if 'scores' in proxies:
    lines += [f'Every proxy against the held-out C-score estimate (Spearman '
              'easier-is-higher; AUROC of the hardness for C-score < 0.5, '
              f'and for the hardest {frac:g}; top-k overlap / chance):', '',
              '| score | Spearman | AUROC (C < 0.5) | per-class AUROC min-max '
              f'| AUROC (hardest {frac:g}) | top-k / chance |',
              '|---|---|---|---|---|---|']
    rows = []
    for name, s in proxies['scores'].items():
      if 'below_half' not in s:
        continue
      bh = s['below_half']
      per = [c['auroc'] for c in bh['per_class'] if c['auroc'] is not None
             and np.isfinite(c['auroc'])]
      auc, ovl = _tail(s)
      rows.append((s.get('spearman') or -2, f"| {name} | "
                   f"{_fmt(s.get('spearman'))} | {_fmt(bh.get('auroc'))} | "
                   f"{_fmt(min(per) if per else None)}-"
                   f"{_fmt(max(per) if per else None)} | {auc} | {ovl} |"))
    rows.sort(key=lambda x: -x[0])
    lines += [row for _, row in rows] + ['']
  elif proxies:
    lines += [f"Proxies not judged: {proxies.get('skipped')}", '']
  ref = r.get('reference')
  if ref:
    src = ref['reference']['path']
    lines += [f'Against the published reference ({src}): Spearman over '
              'every example and over those with a '
              'published value < 1, AUROC for a published value < 0.5, the '
              "estimate's mean standard error.", '',
              '| estimate | examples | Spearman | Spearman (published < 1) | '
              'AUROC (published < 0.5) | mean se |',
              '|---|---|---|---|---|---|']
    for name, s in ref['columns'].items():
      if 'skipped' in s:
        lines.append(f"| {name} | {s['examples']} | {s['skipped']} |")
        continue
      lines.append(
          f"| {name} | {s['examples']} | {_fmt(s.get('spearman'))} | "
          f"{_fmt(s.get('spearman_reference_below_one'))} "
          f"({s.get('reference_below_one')} examples) | "
          f"{_fmt((s.get('below_half') or {}).get('auroc'))} | "
          f"{_fmt(s.get('mean_se'))} |")
    lines.append('')
  return lines


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('workdir')
  parser.add_argument('--reference_below', type=float, default=0.5)
  parser.add_argument('--test_label_errors', default='',
                      help="cleanlab's mturk/cifar10_mturk.json (CIFAR-10).")
  args = parser.parse_args(argv)
  out = (members_table(args.workdir) + findings(args.workdir) +
         reference_table(args.workdir, args.reference_below) +
         label_error_table(args.workdir) + causes_table(args.workdir) +
         sweep_tables(args.workdir) + heldout_table(args.workdir))
  if args.test_label_errors:
    out += test_error_table(args.workdir, args.test_label_errors)
  print('\n'.join(out))


if __name__ == '__main__':
  main()
