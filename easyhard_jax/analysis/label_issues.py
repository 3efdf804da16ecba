"""Suspected label errors from the members' predicted classes.

An example whose members keep predicting one class other than its given
label is a suspected label error. Over the (member, probe) pairs t of the
label-issue window (``config.analysis.label_issues.window``; empty =
``config.analysis.window``, the easiness window):

* **agreed class**: the most frequent predicted class other than the given
  label (ties: the lowest class index; -1 when every prediction is the given
  label);
* **agreement**: its share of the pairs (count / pairs with a prediction);
* **score** (``label_issue``, higher = more suspect, i.e. harder): how much
  more probability the members give the agreed class than the given label,
  a confident-learning style margin (Northcutt et al. 2021) in [-1, 1]:
  ``mean_t [1(pred_t = agreed) p_t(agreed) - p_t(given)]``. The records
  hold p_t(given) = exp(-loss_t), and on a pair predicting the agreed
  class the margin is logit(given) - logit(agreed), so there
  p_t(agreed) = exp(-loss_t - margin_t) exactly; a pair predicting any
  other class counts 0 for the agreed class (a lower bound). The score is
  therefore near 1 only when every pair puts nearly all its probability on
  one other class: it ranks "consistently assigned to one other class" by
  both the consistency (a pair that does not vote for the agreed class
  adds nothing) and the confidence of the assignment, where the vote share
  alone ties a confident reassignment with a 51:49 one.

Why early probes: a network first fits the patterns shared by a class and
only later memorises individual examples, wrong labels included (Arpit et
al. 2017; Zhang et al. 2017). Before that, a mislabelled example is
predicted as its true class, consistently across members; after it, the
prediction follows the wrong label and the evidence is gone. Clean but
ambiguous examples, in contrast, split their votes between classes, and
where their votes agree they give the other class little more probability
than the given one.

With known label errors (``config.analysis.known_noisy``, or the flips of
``config.label_noise``) :func:`detection_report` gives every score's AUROC
and precision at k (k = number of known errors), each score oriented so that
harder = more suspect.
"""

from __future__ import annotations

import csv
import functools
import io
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from easyhard_jax.analysis import scores as scores_lib

NAME = 'label_issue'
TABLE_COLUMNS = ('index', 'tfds_id', 'given_label', 'agreed_class',
                 'agreement', 'score')
# Count matrices [examples, classes] are built this many entries at a time.
_BLOCK_ENTRIES = 1 << 25


@functools.partial(jax.jit, static_argnames='num_classes')
def vote_counts(pred: jax.Array, margin: jax.Array, loss: jax.Array,
                labels: jax.Array, valid: jax.Array, *, num_classes: int
                ) -> tuple[jax.Array, ...]:
  """Counts the votes of (member, probe) pairs per example.

  Args:
    pred: int [T, N], the predicted class of each pair; -1 = none.
    margin: float [T, N], the given label's eval margin.
    loss: float [T, N], the given label's cross-entropy (-log p(given)).
    labels: int [N], the given labels.
    valid: bool [T], the pairs that vote (a traced mask: no recompile).
    num_classes: C.

  Returns:
    (agreed class int32 [N] (-1 = none), its votes int32 [N], voting pairs
    int32 [N], sum over voting pairs of 1(pred = agreed) p(agreed) and of
    p(given), float32 [N] each).
  """
  n = pred.shape[1]
  row_at = lambda x, t: jax.lax.dynamic_index_in_dim(x, t, 0, keepdims=False)
  votes_of = lambda t: valid[t] & (row_at(pred, t) >= 0)

  def count(t, counts):
    hot = jax.nn.one_hot(jnp.where(votes_of(t), row_at(pred, t), -1),
                         num_classes, dtype=jnp.int32)
    return counts + hot

  counts = jax.lax.fori_loop(0, pred.shape[0], count,
                             jnp.zeros((n, num_classes), jnp.int32))
  total = jnp.sum(counts, axis=1)
  others = jnp.where(jax.nn.one_hot(labels, num_classes) > 0, -1, counts)
  agreed = jnp.argmax(others, axis=1).astype(jnp.int32)  # First max: lowest.
  votes = jnp.max(others, axis=1)
  agreed = jnp.where(votes > 0, agreed, -1)

  def prob(t, carry):
    p_agreed, p_given = carry
    ok = votes_of(t)
    nll = row_at(loss, t).astype(jnp.float32)
    # log p(agreed) = -loss - margin where agreed is the top class; <= 0
    # up to rounding.
    log_pa = jnp.minimum(-nll - row_at(margin, t).astype(jnp.float32), 0.0)
    hit = ok & (row_at(pred, t) == agreed)
    return (p_agreed + jnp.where(hit, jnp.exp(log_pa), 0.0),
            p_given + jnp.where(ok, jnp.exp(-nll), 0.0))

  zeros = jnp.zeros((n,), jnp.float32)
  p_agreed, p_given = jax.lax.fori_loop(0, pred.shape[0], prob,
                                        (zeros, zeros))
  return agreed, jnp.maximum(votes, 0), total, p_agreed, p_given


def label_issue_scores(pred: np.ndarray, margin: np.ndarray,
                       loss: np.ndarray, labels: np.ndarray,
                       probe_mask: np.ndarray,
                       num_classes: int) -> dict[str, np.ndarray]:
  """The label-issue statistics of every example (see the module docstring).

  Args:
    pred: int [M, P, N], predicted classes (-1 = unknown).
    margin: float [M, P, N], eval margins of the given label.
    loss: float [M, P, N], eval cross-entropy of the given label.
    labels: int [N].
    probe_mask: bool [P], the probes that vote.
    num_classes: C.

  Returns:
    {'agreed_class' int32 [N], 'agreement' float64 [N] (NaN without votes),
    'p_agreed' and 'p_given' float64 [N] (the two means of the score; NaN
    without votes), 'score' float64 [N] (NaN without votes), 'pairs' int32
    [N]}.
  """
  m, p, n = np.shape(pred)
  pred = np.asarray(pred).reshape(m * p, n)  # Contiguous: no transpose.
  margin = np.asarray(margin, np.float32).reshape(m * p, n)
  loss = np.asarray(loss, np.float32).reshape(m * p, n)
  valid = jnp.asarray(np.tile(np.asarray(probe_mask, bool), m))
  labels = np.asarray(labels, np.int32)
  block = max(1, min(n, _BLOCK_ENTRIES // max(num_classes, 1)))
  outs = []
  for start in range(0, n, block):  # Equal blocks: one compilation.
    stop = min(start + block, n)
    pad = ((0, 0), (0, block - (stop - start)))
    out = vote_counts(
        jnp.asarray(np.pad(pred[:, start:stop], pad, constant_values=-1),
                    jnp.int32),
        jnp.asarray(np.pad(margin[:, start:stop], pad)),
        jnp.asarray(np.pad(loss[:, start:stop], pad)),
        jnp.asarray(np.pad(labels[start:stop], pad[1])), valid,
        num_classes=num_classes)
    outs.append([np.asarray(o)[:stop - start] for o in out])
  agreed, votes, total, p_agreed, p_given = (np.concatenate(c)
                                             for c in zip(*outs))
  has = total > 0
  mean = lambda x: np.where(has, x.astype(np.float64) / np.maximum(total, 1),
                            np.nan)
  out = {'agreed_class': agreed.astype(np.int32), 'agreement': mean(votes),
         'p_agreed': mean(p_agreed), 'p_given': mean(p_given),
         'pairs': total.astype(np.int32)}
  out['score'] = out['p_agreed'] - out['p_given']
  return out


def window(analysis_config: Any) -> tuple[float, float]:
  """The label-issue window: its own, or the easiness window when empty."""
  block = analysis_config.get('label_issues')
  own = tuple(block.get('window', ())) if block is not None else ()
  return tuple(own) if own else tuple(analysis_config.window)


def from_records(rec: Any, analysis_config: Any,
                 num_classes: int) -> dict[str, np.ndarray] | None:
  """:func:`label_issue_scores` of probe records, or None without ``pred``.

  Records made before predictions were stored carry ``pred == -1``.
  """
  pred = getattr(rec, 'pred', None)
  if pred is None or not (np.asarray(pred) >= 0).any():
    return None
  mask = scores_lib.window_mask(rec.probe_epochs, window(analysis_config))
  return label_issue_scores(pred, rec.margin, rec.loss, rec.labels, mask,
                            num_classes)


def ranking(score: np.ndarray) -> np.ndarray:
  """Example order, most suspect first (NaN last, then by example index)."""
  s = np.asarray(score, np.float64)
  key = np.where(np.isnan(s), np.inf, -s)
  return np.lexsort((np.arange(s.size), key))


def table_csv_bytes(rec: Any, li: Mapping[str, np.ndarray]) -> bytes:
  """The ranked label-issue table (:data:`TABLE_COLUMNS`) as CSV."""
  buf = io.StringIO()
  w = csv.writer(buf, lineterminator='\n')
  w.writerow(TABLE_COLUMNS)
  ids = rec.tfds_ids
  for i in ranking(li['score']):
    tid = '' if ids is None or ids[i] is None else str(ids[i])
    w.writerow([int(rec.example_ids[i]), tid, int(rec.labels[i]),
                int(li['agreed_class'][i]), f"{li['agreement'][i]:.7g}",
                f"{li['score'][i]:.9g}"])
  return buf.getvalue().encode()


def read_indices(path: str, num_examples: int) -> np.ndarray:
  """Example indices from a .npy, .txt or .csv file (sorted, unique).

  A .csv holds one index per row in its ``example_index`` or ``index``
  column (or its first column), with or without a header; a .txt holds
  whitespace-separated integers.
  """
  path = os.path.expanduser(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f'config.analysis.known_noisy: {path} does not '
                            'exist.')
  if path.endswith('.npy'):
    values = np.load(path, allow_pickle=False).ravel()
  elif path.endswith('.csv'):
    with open(path, newline='') as f:
      rows = [r for r in csv.reader(f) if r]
    col = 0
    if rows and not rows[0][0].strip().lstrip('-').isdigit():
      head = [h.strip() for h in rows.pop(0)]
      col = next((head.index(h) for h in ('example_index', 'index')
                  if h in head), 0)
    values = np.asarray([r[col] for r in rows], np.float64)
  else:
    with open(path) as f:
      values = np.asarray(f.read().split(), np.float64)
  values = np.asarray(values)
  if values.size and (np.any(values != np.round(values)) or
                      values.min() < 0 or values.max() >= num_examples):
    raise ValueError(f'{path} must hold integer train example indices in '
                     f'0..{num_examples - 1}.')
  return np.unique(values.astype(np.int64))


def known_noisy(config: Any, num_examples: int
                ) -> tuple[np.ndarray | None, str]:
  """(known mislabelled train indices or None, where they come from).

  ``config.analysis.known_noisy`` when set; else, with
  ``config.label_noise.fraction > 0``, the flipped indices, recomputed from
  the config by the function that flipped them.
  """
  from easyhard_jax.data import sources  # Data only, never train/.
  path = config.analysis.get('known_noisy', '')
  if path:
    return read_indices(path, num_examples), path
  fraction = sources.label_noise_fraction(config)
  if fraction > 0:
    seed = int(config.label_noise.seed)
    return (sources.label_noise_indices(num_examples, fraction, seed),
            f'config.label_noise (fraction {fraction}, seed {seed})')
  return None, 'none'


def auroc(hardness: np.ndarray, positive: np.ndarray) -> float:
  """P(a positive ranks above a negative); ties count one half.

  NaN hardness ranks below everything.
  """
  h = np.asarray(hardness, np.float64)
  h = np.where(np.isnan(h), -np.inf, h)
  pos = np.asarray(positive, bool)
  n_pos, n_neg = int(pos.sum()), int((~pos).sum())
  if not n_pos or not n_neg:
    return float('nan')
  _, inv, counts = np.unique(h, return_inverse=True, return_counts=True)
  start = np.cumsum(counts) - counts + 1
  ranks = (start + (counts - 1) / 2.0)[inv]  # Midranks of tied values.
  return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) /
               (n_pos * n_neg))


def precision_at_k(hardness: np.ndarray, positive: np.ndarray,
                   k: int) -> float:
  """Share of positives among the k hardest, ties at the cut shared.

  Examples tied with the k-th hardest count in proportion (the expected
  precision under a random order of the tie), so the result does not
  depend on how ties are broken. NaN hardness ranks below everything.
  """
  h = np.asarray(hardness, np.float64)
  h = np.where(np.isnan(h), -np.inf, h)
  pos = np.asarray(positive, bool)
  if k <= 0 or k > h.size:
    return float('nan')
  cut = np.sort(h)[::-1][k - 1]
  above, tied = h > cut, h == cut
  need = k - int(above.sum())
  hits = pos[above].sum() + need * pos[tied].sum() / tied.sum()
  return float(hits / k)


def detection_report(example: Mapping[str, np.ndarray],
                     noisy: np.ndarray, num_examples: int,
                     source: str) -> dict[str, Any]:
  """AUROC and precision at k of every score for the known label errors.

  Args:
    example: {score name: [N]} (the analysis's per-example scores).
    noisy: int [k] known mislabelled indices.
    num_examples: N.
    source: where the indices come from (for the JSON).

  Returns:
    {'source', 'known_noisy', 'examples', 'k', 'scores': {name: {'auroc',
    'precision_at_k', 'oriented'}}}; each score is oriented harder = more
    suspect (variability, which has no hard end, is used as is).
  """
  positive = np.zeros(num_examples, bool)
  positive[np.asarray(noisy, np.int64)] = True
  k = int(positive.sum())
  out = {}
  for name in scores_lib.SCORE_NAMES:
    if name not in example:
      continue
    v = np.asarray(example[name], np.float64)
    o = scores_lib.orientation(name)
    hard = v if o == scores_lib.NEITHER else -scores_lib.easier_key(v, name)
    out[name] = {'auroc': auroc(hard, positive),
                 'precision_at_k': precision_at_k(hard, positive, k),
                 'oriented': 'raw' if o == scores_lib.NEITHER else
                             'higher_is_harder',
                 'nan_examples': int(np.isnan(v).sum())}
  return {'source': source, 'known_noisy': k, 'examples': int(num_examples),
          'k': k, 'scores': out}
