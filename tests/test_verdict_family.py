"""Family-wise error of the cause-probe verdicts (noise_floor.correct_verdicts).

A null simulation: every probe and the control are drawn from one
distribution (figures linear in the members, where the control's t test is
exact), so any "departs" is a false departure. Holm's correction keeps the
rate at which a study shows at least one within 5%; the uncorrected verdicts
do not.
"""

import json

import numpy as np
import pytest

from easyhard_jax.experiments import causes
from easyhard_jax.experiments import noise_floor

ARCHS = ('cnn', 'vgg11')
PROBES = ('random_labels', 'large_batch', 'full_batch', 'adam')


class _LinearComparer:
  """Figures that are means of per-member values ([M, 4] in ``margin``)."""

  archs = list(ARCHS)

  def figures(self, ens, idx):
    chosen = np.zeros(len(ens.margin), bool)
    chosen[idx] = True
    per = [ens.margin[chosen & ens.in_arch[a]].mean(0) for a in ARCHS]
    overall = np.mean(per, axis=0)
    out = {f: float(v) for f, v in zip(noise_floor.FIGURES, overall)}
    out['per_arch'] = {a: {'easy_overlap_ratio': float(v[0]),
                           'spearman': float(v[2])}
                       for a, v in zip(ARCHS, per)}
    return out


def _ensemble(rng, per_arch):
  # Correlated figures (a shared member factor), arch-specific means.
  shared = rng.normal(size=(2 * per_arch, 1))
  values = 0.6 * shared + 0.8 * rng.normal(size=(2 * per_arch, 4))
  values += np.repeat([[1.0, 2.0, 0.5, 3.0], [1.5, 2.5, 0.4, 3.0]],
                      per_arch, axis=0)
  ens = noise_floor.Ensemble(
      hits=np.zeros((2 * per_arch, 1), np.int64), probes=1, margin=values,
      arch_members={a: np.arange(i * per_arch, (i + 1) * per_arch)
                    for i, a in enumerate(ARCHS)})
  ens.in_arch = {a: np.repeat(np.arange(2) == i, per_arch)
                 for i, a in enumerate(ARCHS)}
  return ens


def test_holm_matches_its_definition():
  p = np.array([0.01, 0.04, 0.03, 0.005, 0.5])
  adj, rej = noise_floor.holm(p, 0.05)
  # Sorted 0.005, 0.01, 0.03, 0.04, 0.5 times 5, 4, 3, 2, 1, running max.
  np.testing.assert_allclose(adj, [0.04, 0.09, 0.09, 0.025, 0.5])
  assert rej.tolist() == [True, False, False, True, False]
  adj, rej = noise_floor.holm([], 0.05)
  assert adj.size == 0 and rej.size == 0


@pytest.mark.slow
def test_null_probes_depart_at_most_alpha_family_wise():
  rng = np.random.default_rng(0)
  comparer, n, m, trials = _LinearComparer(), 4, 2, 2000
  any_holm = any_raw = any_arch = 0
  family = None
  for _ in range(trials):
    control = noise_floor.control_summary(comparer, _ensemble(rng, n), m,
                                          limit=100, level=0.95)
    # pylint: disable-next=protected-access
    detail = {causes.CONTROL: causes._with_control(
        comparer.figures(_ensemble(rng, n), np.arange(2 * n)), control, m)}
    for name in PROBES:
      ens = _ensemble(rng, m)
      detail[name] = causes._with_control(  # pylint: disable=protected-access
          comparer.figures(ens, ens.all_members()), control, m)
    family = noise_floor.correct_verdicts(detail, causes.CONTROL, control)
    any_holm += family['overall']['departures'] > 0
    any_raw += family['overall']['departures_uncorrected'] > 0
    any_arch += family['per_arch']['departures'] > 0
    assert all(detail[p]['departs_from_control'] == [
        f for f in noise_floor.FIGURES if detail[p]['vs_control'][f]['departs']]
               for p in PROBES)
  assert family['overall']['size'] == 16 and family['per_arch']['size'] == 16
  np.testing.assert_allclose(family['overall']['first_threshold'], 0.05 / 16)
  mc = 2 * np.sqrt(0.05 * 0.95 / trials)  # Two Monte Carlo standard errors.
  assert any_holm / trials <= 0.05 + mc, (any_holm, any_raw)
  assert any_arch / trials <= 0.05 + mc, any_arch
  # Uncorrected, a null study shows some departure far more often.
  assert any_raw / trials > 0.1, (any_holm, any_raw)


def test_report_names_the_family_and_its_threshold(tmp_path):
  from easyhard_jax.report import experiment_sections
  rng = np.random.default_rng(3)
  comparer = _LinearComparer()
  control = noise_floor.control_summary(comparer, _ensemble(rng, 4), 2,
                                        limit=100)
  # pylint: disable-next=protected-access
  variants = {causes.CONTROL: causes._with_control(
      comparer.figures(_ensemble(rng, 4), np.arange(8)), control, 2)}
  for name in PROBES:
    ens = _ensemble(rng, 2)
    variants[name] = causes._with_control(  # pylint: disable=protected-access
        comparer.figures(ens, ens.all_members()), control, 2)
  verdicts = noise_floor.correct_verdicts(variants, causes.CONTROL, control)
  fam = verdicts['overall']
  path = tmp_path / 'results.json'
  path.write_text(json.dumps({
      'archs': list(ARCHS), 'members_per_arch': 2,
      'control': {'name': causes.CONTROL, 'members_per_arch': 4,
                  'departure_z': control['threshold'],
                  'departure_level': 0.95},
      'verdicts': verdicts, 'variants': variants,
      'rows': [{'variant': k} for k in variants]}))
  sec = experiment_sections.causes_section(str(path), 'causes', 'Causes', '')
  caption = sec.figures[0].caption
  assert 'Holm-corrected over the family of 16 verdicts' in caption
  assert f"|z| > {fam['z_first']:.3g}" in caption
  # The band is Holm's first step: wider than the uncorrected one.
  assert fam['z_first'] > control['threshold']
  band = experiment_sections._band(  # pylint: disable=protected-access
      json.loads(path.read_text()),
      variants[causes.CONTROL], 'spearman_easiness')
  np.testing.assert_allclose(band, fam['z_first'] * control[
      'spearman_easiness']['spread'] * np.sqrt(1 + 2 / 4))
  # summary.md names the correction where a probe departs.
  variants['adam']['vs_control']['spearman_easiness']['departs'] = True
  path.write_text(json.dumps({'control': {'name': causes.CONTROL},
                              'verdicts': verdicts, 'variants': variants}))
  (line,) = [x for x in experiment_sections.causes_summary(str(path))
             if x.startswith('adam')]
  assert line.endswith('Spearman (Holm-corrected over 16 verdicts).')
