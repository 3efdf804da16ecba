"""Test-split error fractions against loop references."""

import numpy as np
import pytest

from easyhard_jax.analysis import heldout_errors
from easyhard_jax.analysis import results
from easyhard_jax.analysis import scores
from easyhard_jax.analysis import sets


def test_error_fraction_in_set_matches_loops():
  rng = np.random.default_rng(0)
  m, n = 4, 50
  final = rng.random((m, n)) < 0.7
  final[3] = True  # A member without errors.
  hard = rng.random(n) < 0.3
  out = heldout_errors.error_fraction_in_set(final, hard)
  tot_err = tot_in = 0
  for i in range(m):
    errs = [j for j in range(n) if not final[i, j]]
    inside = [j for j in errs if hard[j]]
    assert int(out['errors'][i]) == len(errs)
    assert int(out['errors_in_set'][i]) == len(inside)
    if errs:
      np.testing.assert_allclose(out['fraction'][i], len(inside) / len(errs),
                                 rtol=1e-6)
    else:
      assert np.isnan(out['fraction'][i])
    tot_err += len(errs)
    tot_in += len(inside)
  np.testing.assert_allclose(out['pooled_fraction'], tot_in / tot_err,
                             rtol=1e-6)
  np.testing.assert_allclose(out['set_share'], hard.mean(), rtol=1e-6)
  np.testing.assert_allclose(out['enrichment'],
                             tot_in / tot_err / hard.mean(), rtol=1e-5)
  per_member = rng.random((m, n)) < 0.3
  out = heldout_errors.error_fraction_in_set(final, per_member)
  for i in range(3):
    errs = ~final[i]
    np.testing.assert_allclose(out['fraction'][i],
                               (errs & per_member[i]).sum() / errs.sum(),
                               rtol=1e-6)


def test_leave_one_out_mean_matches_loops():
  v = np.random.default_rng(1).random((3, 7)).astype(np.float32)
  got = np.asarray(heldout_errors.leave_one_out_mean(v))
  for i in range(3):
    others = [v[j] for j in range(3) if j != i]
    np.testing.assert_allclose(got[i], np.mean(others, axis=0), rtol=1e-6)


@pytest.mark.slow
def test_report_finds_errors_concentrated_in_hard_examples():
  rng = np.random.default_rng(2)
  m, p, n = 4, 6, 60  # As in test_analysis_stage: shared compilations.
  difficulty = rng.random(n)
  correct = rng.random((m, p, n)) > difficulty  # Hard stays hard.
  sc = scores.scores_from_arrays(correct, margin=correct * 1.0 - 0.5)
  rule = sets.SetRule(fraction=0.2)
  labels = rng.integers(0, 2, n).astype(np.int32)
  report, easy, hard = heldout_errors.heldout_error_report(
      sc, correct[:, -1], labels, rule, 2)
  assert easy.sum() == hard.sum() == 12 and not (easy & hard).any()
  share = report['errors_in_hard']['set_share']
  np.testing.assert_allclose(share, 0.2)
  assert report['errors_in_hard']['pooled_fraction'] > 1.5 * share
  assert report['errors_in_easy']['pooled_fraction'] < share
  loo = report['errors_in_hard_leave_one_out']
  assert share < loo['pooled_fraction'] <= (
      report['errors_in_hard']['pooled_fraction'] + 0.05)
  one, _, _ = heldout_errors.heldout_error_report(
      scores.scores_from_arrays(correct[:1]), correct[0, -1][None], labels,
      sets.SetRule(fraction=0.2, tiebreak='none'), 2)
  assert isinstance(one['errors_in_hard_leave_one_out'], results.Skipped)
