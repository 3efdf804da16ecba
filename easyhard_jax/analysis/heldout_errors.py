"""Test-split easiness and where the final models' test errors fall.

(Named heldout_errors, not test_*, so pytest never collects it.)

Test examples get the same scores as training examples, from the test-split
probe records (the models never train on them). The question of the paper's
finding (4) is: what fraction of the final models' test errors (the last
probe of each member) are test-hard examples, against the hard set's share
of the test set (what errors spread at random would give)?

The hard set is chosen by the same members whose errors are counted, which
flatters the fraction (an example wrong early is likelier wrong at the end
for the same model). So a leave-one-out variant is reported too: member m's
errors are compared with the hard set built from the other members only.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from easyhard_jax.analysis import results
from easyhard_jax.analysis import sets as sets_lib


@jax.jit
def error_fraction_in_set(final_correct: jax.Array,
                          set_mask: jax.Array) -> dict[str, jax.Array]:
  """How many of each member's errors fall in a set.

  Args:
    final_correct: bool [M, N], correctness of each final model.
    set_mask: bool [N] (one set for all members) or [M, N] (one per member).

  Returns:
    ``errors`` int32 [M], ``errors_in_set`` int32 [M], ``fraction`` float32
    [M] (NaN for a member without errors), ``pooled_fraction`` (all members'
    errors together), ``set_share`` (|set| / N, mean over rows for [M, N]) and
    ``enrichment`` = pooled_fraction / set_share.
  """
  errors = ~final_correct
  in_set = errors & jnp.broadcast_to(set_mask, errors.shape)
  n_err = jnp.sum(errors, axis=1, dtype=jnp.int32)
  n_in = jnp.sum(in_set, axis=1, dtype=jnp.int32)
  frac = jnp.where(n_err > 0, n_in / jnp.maximum(n_err, 1), jnp.nan)
  total = jnp.sum(n_err)
  pooled = jnp.where(total > 0, jnp.sum(n_in) / jnp.maximum(total, 1),
                     jnp.nan)
  share = jnp.mean(set_mask.astype(jnp.float32))
  return {'errors': n_err, 'errors_in_set': n_in,
          'fraction': frac.astype(jnp.float32),
          'pooled_fraction': pooled.astype(jnp.float32),
          'set_share': share,
          'enrichment': jnp.where(share > 0, pooled / share, jnp.nan)}


@jax.jit
def leave_one_out_mean(member_values: jax.Array) -> jax.Array:
  """Row m = mean of the other members' rows (float32 [M, N]; needs M > 1)."""
  m = member_values.shape[0]
  v = member_values.astype(jnp.float32)
  return (jnp.sum(v, axis=0, keepdims=True) - v) / (m - 1)


def heldout_error_report(test_scores: dict[str, Any], final_correct: np.ndarray,
                      labels: np.ndarray, rule: sets_lib.SetRule,
                      num_classes: int) -> tuple[dict[str, Any],
                                                 np.ndarray, np.ndarray]:
  """Test hard/easy sets and the share of final test errors they hold.

  Args:
    test_scores: ``scores.compute_scores`` of the test records.
    final_correct: bool [M, N], the last probe of each member on the test set.
    labels: int [N] test labels.
    rule: the easy/hard rule (k from the test split's size).
    num_classes: number of classes.

  Returns:
    (report dict, easy mask [N], hard mask [N]).
  """
  labels_j = jnp.asarray(labels, jnp.int32)
  k = rule.resolve_k(labels, num_classes) if rule.method == 'top_k' else None
  score = test_scores['example'][rule.score]
  sets_lib.check_finite(score, rule.score)
  easy, hard = sets_lib.easy_hard_masks(
      rule, score, labels=labels_j, num_classes=num_classes, k=k,
      tiebreak=test_scores['example']['early_margin'])
  fc = jnp.asarray(final_correct, bool)
  to_np = lambda d: jax.tree.map(np.asarray, d)
  report: dict[str, Any] = {
      'num_examples': int(labels.shape[0]),
      'final_error_rate': np.asarray(1.0 - jnp.mean(fc, axis=1)),
      'easy_size': int(jnp.sum(easy)), 'hard_size': int(jnp.sum(hard)),
      'errors_in_hard': to_np(error_fraction_in_set(fc, hard)),
      'errors_in_easy': to_np(error_fraction_in_set(fc, easy)),
  }
  members = test_scores['member']
  if fc.shape[0] > 1:
    loo_score = leave_one_out_mean(jnp.asarray(members[rule.score]))
    loo_margin = leave_one_out_mean(jnp.asarray(members['early_margin']))
    _, loo_hard = sets_lib.easy_hard_masks(
        rule, loo_score, labels=labels_j, num_classes=num_classes, k=k,
        tiebreak=loo_margin)
    report['errors_in_hard_leave_one_out'] = to_np(
        error_fraction_in_set(fc, loo_hard))
  else:
    report['errors_in_hard_leave_one_out'] = results.Skipped(
        'only one member: no other members to define the set')
  return report, np.asarray(easy), np.asarray(hard)
