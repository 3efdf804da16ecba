"""Suspected label errors from the members' predicted classes.

An example whose members keep predicting one class other than its given
label is a suspected label error. Over the (member, probe) pairs t of the
label-issue window (:func:`window`: ``config.analysis.label_issues.window``;
empty = every probe after the first epoch and the learning-rate warm-up):

* **vote**: pair t votes for its predicted class k (other than the given
  label) when, with ``label_issues.calibration = 'class_threshold'``, the
  pair's p_t(k) reaches the per-class threshold of confident learning
  (Northcutt et al. 2021), t_k(t) = the mean of p_t(k) over the examples
  labelled k (each pair its own thresholds); with ``'none'`` every
  prediction votes. The threshold keeps a class that the members predict
  for many examples they have not learned yet (early class bias) from
  reading as label errors: such predictions rarely reach the confidence
  the class's own examples get;
* **agreed class**: the class with the most votes (ties: the lowest class
  index; -1 when no pair votes for another class);
* **agreement**: its share of the pairs (count / pairs with a prediction);
* **score** (``label_issue``, higher = more suspect, i.e. harder), by
  ``label_issues.score``: ``'p_given'`` (the default) = ``-mean_t
  p_t(given)``, the members' mean probability of the given label, negated
  (the agreed class then only names the suspect's likely class); it found
  known flips best in every measurement (docs/label_issues.md: -p(given)
  ahead of AUM and of the margin below on Fashion-MNIST with fresh noise
  seeds). ``'agreed_margin'``: how much more probability the members give
  the agreed class than the given label,
  a confident-learning style margin (Northcutt et al. 2021) in [-1, 1]:
  ``mean_t [1(t votes agreed) p_t(agreed) - p_t(given)]``. The records
  hold p_t(given) = exp(-loss_t), and on a pair predicting the agreed
  class the margin is logit(given) - logit(agreed), so there
  p_t(agreed) = exp(-loss_t - margin_t) exactly; a pair not voting for the
  agreed class counts 0 for it (a lower bound). The thresholds need only
  p(given) too: p_t(k) of an example labelled k is its p_t(given). The
  score is therefore near 1 only when every pair puts nearly all its
  probability on one other class: it ranks "consistently assigned to one other class" by
  both the consistency (a pair that does not vote for the agreed class
  adds nothing) and the confidence of the assignment, where the vote share
  alone ties a confident reassignment with a 51:49 one.

Why these probes: a network first fits the patterns shared by a class and
only later memorises individual examples, wrong labels included (Arpit et
al. 2017; Zhang et al. 2017). Before that, a mislabelled example is
predicted as its true class, consistently across members; after it, the
prediction follows the wrong label and the evidence is gone. Clean but
ambiguous examples, in contrast, split their votes between classes, and
where their votes agree they give the other class little more probability
than the given one. The very first probes are no better: during warm-up
the members predict a few classes for the examples they have not learned
yet, and that class bias would read as label error (on digits, in window
(0, 3] without calibration, 8s "agreed" as 1s); hence the default window
starts after it.

:func:`suspect_shares` compares each agreed class's share of the top
suspects with its share of the data; the report notes a class that
dominates the suspects.

Known label errors and how well every score finds them: label_noise.py.
"""

from __future__ import annotations

import csv
import functools
import io
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
                labels: jax.Array, valid: jax.Array, thresholds: jax.Array,
                *, num_classes: int) -> tuple[jax.Array, ...]:
  """Counts the votes of (member, probe) pairs per example.

  Args:
    pred: int [T, N], the predicted class of each pair; -1 = none.
    margin: float [T, N], the given label's eval margin.
    loss: float [T, N], the given label's cross-entropy (-log p(given)).
    labels: int [N], the given labels.
    valid: bool [T], the pairs that count (a traced mask: no recompile).
    thresholds: float32 [T, C]: a pair's prediction of another class k
      votes only when its p(k) >= thresholds[t, k] (zeros: every one).
    num_classes: C.

  Returns:
    (agreed class int32 [N] (-1 = none), its votes int32 [N], pairs with a
    prediction int32 [N], sum over those pairs of 1(votes agreed)
    p(agreed) and of p(given), float32 [N] each).
  """
  n = pred.shape[1]
  row_at = lambda x, t: jax.lax.dynamic_index_in_dim(x, t, 0, keepdims=False)
  seen = lambda t: valid[t] & (row_at(pred, t) >= 0)

  def log_p_pred(t):
    # log p(pred) = -loss - margin where pred is another class (the margin's
    # largest other logit); <= 0 up to rounding.
    return jnp.minimum(-row_at(loss, t).astype(jnp.float32) -
                       row_at(margin, t).astype(jnp.float32), 0.0)

  def votes_of(t):
    k = row_at(pred, t)
    thr = jnp.take(row_at(thresholds, t), jnp.maximum(k, 0))
    confident = (k == labels) | (jnp.exp(log_p_pred(t)) >= thr)
    return seen(t) & confident

  def count(t, counts):
    hot = jax.nn.one_hot(jnp.where(votes_of(t), row_at(pred, t), -1),
                         num_classes, dtype=jnp.int32)
    return counts + hot

  counts = jax.lax.fori_loop(0, pred.shape[0], count,
                             jnp.zeros((n, num_classes), jnp.int32))
  total = jax.lax.fori_loop(
      0, pred.shape[0], lambda t, c: c + seen(t).astype(jnp.int32),
      jnp.zeros((n,), jnp.int32))
  others = jnp.where(jax.nn.one_hot(labels, num_classes) > 0, -1, counts)
  agreed = jnp.argmax(others, axis=1).astype(jnp.int32)  # First max: lowest.
  votes = jnp.max(others, axis=1)
  agreed = jnp.where(votes > 0, agreed, -1)

  def prob(t, carry):
    p_agreed, p_given = carry
    nll = row_at(loss, t).astype(jnp.float32)
    hit = votes_of(t) & (row_at(pred, t) == agreed)
    return (p_agreed + jnp.where(hit, jnp.exp(log_p_pred(t)), 0.0),
            p_given + jnp.where(seen(t), jnp.exp(-nll), 0.0))

  zeros = jnp.zeros((n,), jnp.float32)
  p_agreed, p_given = jax.lax.fori_loop(0, pred.shape[0], prob,
                                        (zeros, zeros))
  return agreed, jnp.maximum(votes, 0), total, p_agreed, p_given


CALIBRATIONS = ('class_threshold', 'none')
SCORE_KINDS = ('p_given', 'agreed_margin')


def class_thresholds(loss: np.ndarray, labels: np.ndarray,
                     valid: np.ndarray, num_classes: int) -> np.ndarray:
  """Confident learning's per-class thresholds of every pair.

  Args:
    loss: float [T, N], the given label's cross-entropy of each pair.
    labels: int [N], the given labels.
    valid: bool [T, N], the entries with a prediction.
    num_classes: C.

  Returns:
    float32 [T, C]: t_k(t) = the mean p_t(given) = exp(-loss) over the
    examples labelled k with a prediction at pair t; 0 (no threshold) for a
    class without any.
  """
  loss = np.asarray(loss)
  valid = np.asarray(valid, bool)
  labels = np.asarray(labels, np.int64)
  out = np.zeros((loss.shape[0], num_classes), np.float32)
  for t in range(loss.shape[0]):
    ok = valid[t]
    if not ok.any():
      continue
    sums = np.bincount(labels[ok], np.exp(-loss[t, ok].astype(np.float64)),
                       minlength=num_classes)
    counts = np.bincount(labels[ok], minlength=num_classes)
    out[t] = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
  return out


def label_issue_scores(pred: np.ndarray, margin: np.ndarray,
                       loss: np.ndarray, labels: np.ndarray,
                       probe_mask: np.ndarray, num_classes: int,
                       calibration: str = 'none',
                       score: str = 'agreed_margin'
                       ) -> dict[str, np.ndarray]:
  """The label-issue statistics of every example (see the module docstring).

  Args:
    pred: int [M, P, N], predicted classes (-1 = unknown).
    margin: float [M, P, N], eval margins of the given label.
    loss: float [M, P, N], eval cross-entropy of the given label.
    labels: int [N].
    probe_mask: bool [P], the probes that vote.
    num_classes: C.
    calibration: 'class_threshold' (a prediction of another class votes
      only at the class's confident-learning threshold) or 'none'.
    score: 'agreed_margin' (p_agreed - p_given) or 'p_given' (-p_given).

  Returns:
    {'agreed_class' int32 [N], 'agreement' float64 [N] (votes for it per
    pair with a prediction; NaN without any), 'p_agreed' and 'p_given'
    float64 [N] (the two means of the score; NaN without predictions),
    'score' float64 [N] (NaN without predictions), 'pairs' int32 [N]}.
  """
  if score not in SCORE_KINDS:
    raise ValueError(f'config.analysis.label_issues.score must be one of '
                     f'{SCORE_KINDS}, got {score!r}.')
  if calibration not in CALIBRATIONS:
    raise ValueError(f'config.analysis.label_issues.calibration must be one '
                     f'of {CALIBRATIONS}, got {calibration!r}.')
  m, p, n = np.shape(pred)
  pred = np.asarray(pred).reshape(m * p, n)  # Contiguous: no transpose.
  margin = np.asarray(margin, np.float32).reshape(m * p, n)
  loss = np.asarray(loss, np.float32).reshape(m * p, n)
  pair_mask = np.tile(np.asarray(probe_mask, bool), m)
  valid = jnp.asarray(pair_mask)
  labels = np.asarray(labels, np.int32)
  if calibration == 'class_threshold':
    thr = class_thresholds(loss, labels, (pred >= 0) & pair_mask[:, None],
                           num_classes)
  else:
    thr = np.zeros((m * p, num_classes), np.float32)
  thr = jnp.asarray(thr)
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
        jnp.asarray(np.pad(labels[start:stop], pad[1])), valid, thr,
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
  out['score'] = (-out['p_given'] if score == 'p_given' else
                  out['p_agreed'] - out['p_given'])
  return out


def _block(config: Any) -> tuple[Any, Any]:
  """(the study config or None, its analysis config) of either."""
  if 'analysis' in config:
    return config, config.analysis
  return None, config


def window(config: Any) -> tuple[float, float]:
  """The label-issue window in epochs (lo, hi].

  Args:
    config: the study config (or, for old callers, ``config.analysis``).

  Returns:
    ``analysis.label_issues.window`` when set; else (max(1, warm-up
    epochs), epochs]: every probe after the first epoch and the warm-up;
    the easiness window when that is empty or only the analysis block is
    given.
  """
  study, analysis = _block(config)
  block = analysis.get('label_issues')
  own = tuple(block.get('window', ())) if block is not None else ()
  if own:
    return tuple(float(x) for x in own)
  if study is not None and study.get('epochs'):
    opt = study.get('optimizer')
    warmup = float(opt.get('warmup_epochs', 0.0) or 0.0) if opt else 0.0
    lo, hi = max(1.0, warmup), float(study.epochs)
    if lo < hi:
      return lo, hi
  return tuple(float(x) for x in analysis.window)


def _field(config: Any, name: str, default: str) -> str:
  block = _block(config)[1].get('label_issues')
  return str(block.get(name, default)) if block is not None else default


def calibration(config: Any) -> str:
  """``analysis.label_issues.calibration`` ('none' when absent)."""
  return _field(config, 'calibration', 'none')


def score_kind(config: Any) -> str:
  """``analysis.label_issues.score`` ('agreed_margin' when absent)."""
  return _field(config, 'score', 'agreed_margin')


def from_records(rec: Any, config: Any,
                 num_classes: int) -> dict[str, np.ndarray] | None:
  """:func:`label_issue_scores` of probe records, or None without ``pred``.

  Args:
    rec: probe ``Records``. Records made before predictions were stored
      carry ``pred == -1``: None.
    config: the study config (or ``config.analysis``; see :func:`window`).
    num_classes: C.
  """
  pred = getattr(rec, 'pred', None)
  if pred is None or not (np.asarray(pred) >= 0).any():
    return None
  mask = scores_lib.window_mask(rec.probe_epochs, window(config))
  return label_issue_scores(pred, rec.margin, rec.loss, rec.labels, mask,
                            num_classes, calibration(config),
                            score_kind(config))


def suspect_shares(given: np.ndarray, agreed: np.ndarray, top_k: int,
                   num_classes: int | None = None,
                   score: np.ndarray | None = None) -> dict[str, Any]:
  """Each agreed class's share of the top suspects against its data share.

  Args:
    given: int [N], given labels.
    agreed: int [N], agreed classes (-1 = none).
    top_k: the suspects: the first ``top_k`` with an agreed class.
    num_classes: C (default: from the labels).
    score: float [N], the label-issue score; None = the arrays are ranked
      already (most suspect first, as label_issues_*.csv).

  Returns:
    {'suspects': n, 'classes': {class: [share of suspects, share of the
    data (given labels)]} for the agreed classes present, 'dominant': the
    class holding at least half the suspects and at least twice its data
    share (or None), 'ratio': its suspect share / data share (None when
    no example is labelled with it)}.
  """
  if score is not None:
    order = ranking(score)
    given, agreed = np.asarray(given)[order], np.asarray(agreed)[order]
  given = np.asarray(given, np.int64)
  agreed = np.asarray(agreed, np.int64)
  if num_classes is None:
    num_classes = int(max(given.max(initial=-1), agreed.max(initial=-1))) + 1
  top = agreed[agreed >= 0][:max(int(top_k), 0)]
  data = np.bincount(given[given >= 0], minlength=num_classes)
  data = data / max(int(data.sum()), 1)
  out: dict[str, Any] = {'suspects': int(top.size), 'classes': {},
                         'dominant': None, 'ratio': None}
  if not top.size:
    return out
  sus = np.bincount(top, minlength=num_classes) / top.size
  for c in np.flatnonzero(sus):
    out['classes'][str(int(c))] = [float(sus[c]), float(data[c])]
  c = int(np.argmax(sus))  # First max: the lowest class.
  ratio = float(sus[c] / data[c]) if data[c] > 0 else None  # JSON: no inf.
  if sus[c] >= 0.5 and (ratio is None or ratio >= 2.0):
    out['dominant'], out['ratio'] = c, ratio
  return out


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
