"""Per-example statistics from logits, in numpy (no JAX).

The same definitions as the trainer's fused step
(``train/steps.per_example_stats``): softmax cross-entropy, arg-max
prediction (the first maximum), true-class logit minus the largest other
logit, probability of the true class and EL2N. Computed in float64 and
stored as float32, so they agree with the trainer's float32 values to
rounding.
"""

from __future__ import annotations

import numpy as np

FLOAT_FIELDS = ('loss', 'margin', 'p_true', 'el2n')
FIELDS = ('correct', 'loss', 'margin', 'p_true', 'el2n', 'pred')


def from_logits(logits: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
  """Every records field of a batch.

  Args:
    logits: float [B, C], any finite values.
    labels: int [B] in [0, C).

  Returns:
    {'correct': bool [B], 'loss', 'margin', 'p_true', 'el2n': float32 [B],
    'pred': int32 [B]}.
  """
  z = np.asarray(logits, np.float64)
  y = np.asarray(labels, np.int64)
  rows = np.arange(z.shape[0])
  top = z.max(axis=1, keepdims=True)
  logp = z - top - np.log(np.exp(z - top).sum(axis=1, keepdims=True))
  loss = -logp[rows, y]
  others = z.copy()
  others[rows, y] = -np.inf
  margin = z[rows, y] - others.max(axis=1)
  probs = np.exp(logp)
  probs[rows, y] -= 1.0
  pred = np.argmax(z, axis=1).astype(np.int32)
  return {'correct': pred == y,
          'loss': loss.astype(np.float32),
          'margin': margin.astype(np.float32),
          'p_true': np.exp(-loss).astype(np.float32),
          'el2n': np.sqrt((probs ** 2).sum(axis=1)).astype(np.float32),
          'pred': pred}


def from_fields(labels: np.ndarray, size: int, *, loss=None, correct=None,
                pred=None, margin=None, p_true=None,
                el2n=None) -> dict[str, np.ndarray]:
  """Records fields from precomputed per-example values (no logits).

  ``correct`` comes from ``pred`` where only that is given, ``p_true`` from
  ``loss`` (exp(-loss)); a field that cannot be derived is NaN (floats) or
  -1 (pred), as for an example the records never saw.

  Args:
    labels: int [B], the batch's labels.
    size: B.
    loss, correct, pred, margin, p_true, el2n: [B] arrays or None; at least
      one of ``correct`` and ``pred``.

  Returns:
    {field: [B]} as :func:`from_logits`.
  """
  if correct is None and pred is None:
    raise ValueError('Give logits, or at least correct= or pred= (the '
                     'analysis needs correctness).')
  given = {'loss': loss, 'correct': correct, 'pred': pred, 'margin': margin,
           'p_true': p_true, 'el2n': el2n}
  out = {}
  for name, value in given.items():
    if value is None:
      continue
    value = np.asarray(value)
    if value.shape != (size,):
      raise ValueError(f'{name} has shape {value.shape}; expected ({size},) '
                       'like example_index.')
    out[name] = value
  if 'pred' in out:
    if not np.issubdtype(out['pred'].dtype, np.integer):
      raise ValueError(f'pred must hold integer classes, got '
                       f'{out["pred"].dtype}.')
    out['pred'] = out['pred'].astype(np.int32)
    derived = out['pred'] == np.asarray(labels)
    if 'correct' in out and not np.array_equal(
        out['correct'].astype(bool), derived):
      raise ValueError('correct disagrees with pred == label.')
    out['correct'] = derived
  out['correct'] = out['correct'].astype(bool)
  if 'p_true' not in out and 'loss' in out:
    out['p_true'] = np.exp(-np.asarray(out['loss'], np.float64))
  for name in FLOAT_FIELDS:
    out[name] = (np.asarray(out[name], np.float32) if name in out else
                 np.full((size,), np.nan, np.float32))
  out.setdefault('pred', np.full((size,), -1, np.int32))
  return out
