"""Cause probes: do easy and hard examples come from dataset bias or from SGD?

Each variant retrains the ensemble (``causes.archs`` x ``causes.seeds``) for
``causes.epochs`` epochs with one change and records it like the study, in
``WORKDIR/causes/{variant}/``:

  reseed         the control (always trained): no change, fresh seeds,
                 ``causes.control_seeds`` members per architecture. It is the
                 noise floor: what a change of seeds (and the probes' shorter
                 recipe) alone does to every figure.
  random_labels  training labels permuted at random (a fixed seed): if easiness
                 reflects the data, easy-set agreement across architectures
                 should fall to chance.
  large_batch    SGD with ``large_batch_size`` examples per step.
  full_batch     full-batch gradient descent (one step per epoch) for
                 ``full_batch_epochs`` epochs; for small datasets.
  adam           Adam (``adam_learning_rate``) instead of SGD with momentum.
  lowpass        images blurred with a Gaussian of ``lowpass_sigma`` pixels:
                 do the same examples stay easy without high frequencies?
  grayscale      colour removed (luma, replicated over the channels).

Design: every probe trains on a random stream of its own (the root seed
salted by ``causes/{variant}``), so none replays the study's or another
probe's init, data order or augmentation: comparisons are independent
(unpaired), never inflated by shared randomness. The control runs the
probes' recipe (their architectures, epochs and data), not the study's, so a
probe and the control differ only in the change; and it costs about one
probe with ``control_seeds`` members.

Easiness of a probe is taken over the same share of its training as the
study's window (the window in epochs is scaled by the ratio of epochs), and
at the control's resolution: every probe has as many window probes as the
control (a probe whose own schedule gives another count, such as full-batch
training with one step per epoch, is probed at the shares of training of the
control's window probes; probe_schedule.matched_steps), so a member's
easiness takes the same values in both and a verdict never reflects the
probe count. results.json records each one's ``window_probes``.
A probe is probed only inside that stretched window and at the end of
training (the test accuracy): nothing reads the probes in between, and it
keeps no analysis checkpoints.
For every probe it reports, per architecture and overall, the overlap of its
easy (and hard) set with the baseline study's, as a ratio to the overlap
expected by chance, the Spearman correlation of easiness with the baseline,
the cross-architecture easy-set agreement within the probe, and test
accuracy. Each figure uses ``causes.seeds`` members per architecture and
stands beside the control's value at the same count, its seed spread, a z
and whether the probe departs from the control (noise_floor.py defines
them); ``baseline`` holds the study members' test accuracy and their
cross-architecture agreement at the same count, ``chance_test_acc``
1 / classes. Results: ``WORKDIR/causes/results.json`` (written last) and
``results.csv``; the report draws them as one figure.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from typing import Any, Callable

import numpy as np
from absl import logging

from easyhard_jax import config_fields
from easyhard_jax import models
from easyhard_jax.storage import files
from easyhard_jax.storage import records
from easyhard_jax.data import sources
from easyhard_jax.experiments import noise_floor
from easyhard_jax.train import ensemble
from easyhard_jax.train import probe_schedule


CONTROL = 'reseed'
DESIGN = {
    'streams': "one per probe (causes/<variant>), salted into the root "
               "seed: no member replays the study's or another probe's "
               'init, data order or augmentation',
    'paired': False,
    'control': "reseed: the probes' recipe (architectures, epochs, data) "
               'with fresh seeds; control_seeds members per architecture',
    'equal_members': 'every figure from causes.seeds members per '
                     "architecture; the control's over its member-subsets "
                     'of that size',
    'spread': "std of the control's figure over its member-subsets times "
              'sqrt(n / (n - m)): one independent m-member ensemble\'s std',
    'departs': '|probe - control mean| / (spread * sqrt(1 + m / n)) above '
               "the two-sided departure_level quantile of Student's t with "
               'G (n - 1) degrees of freedom (departure_z), corrected by '
               "Holm's step-down over the family of verdicts (verdicts: the "
               "overall figures of every probe; per-architecture figures a "
               'family of their own), family-wise error <= 1 - '
               'departure_level',
}


def _reseed(config, data, cfg):
  del cfg  # The control changes nothing but its random stream.
  return config, data


def _random_labels(config, data, cfg):
  rng = np.random.default_rng(cfg.label_seed)
  return config, dataclasses.replace(
      data, train_labels=rng.permutation(data.train_labels))


def _large_batch(config, data, cfg):
  config.batch_size = int(min(cfg.large_batch_size,
                              data.train_images.shape[0]))
  return config, data


def _full_batch(config, data, cfg):
  config.batch_size = int(data.train_images.shape[0])
  config.epochs = cfg.full_batch_epochs
  config.optimizer.warmup_epochs = 0.0
  # One step per epoch: its window probes are matched to the control's
  # (match_window_probes); every_epochs sets the checkpoints' spacing.
  config.probe.first_epoch_fractions = ()
  config.probe.every_epochs = max(1, cfg.full_batch_epochs // max(
      1, cfg.epochs))
  config.checkpoint_every_epochs = config.probe.every_epochs
  return config, data


def _adam(config, data, cfg):
  config.optimizer.name = 'adam'
  config.optimizer.learning_rate = cfg.adam_learning_rate
  return config, data


def gaussian_lowpass(images: np.ndarray, sigma: float) -> np.ndarray:
  """Blurs uint8 NHWC images with a Gaussian of ``sigma`` px (via the FFT)."""
  _, h, w, _ = images.shape
  fy = np.fft.fftfreq(h)[:, None]
  fx = np.fft.fftfreq(w)[None, :]
  gain = np.exp(-2.0 * (np.pi * sigma) ** 2 * (fx ** 2 + fy ** 2))
  x = np.fft.fft2(images.astype(np.float32), axes=(1, 2))
  out = np.real(np.fft.ifft2(x * gain[None, :, :, None], axes=(1, 2)))
  return np.clip(np.round(out), 0, 255).astype(np.uint8)


def to_grayscale(images: np.ndarray) -> np.ndarray:
  """ITU-R 601 luma, replicated over the channels (identity for 1 channel)."""
  if images.shape[-1] == 1:
    return images
  luma = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114],
                                              np.float32)
  luma = np.clip(np.round(luma), 0, 255).astype(np.uint8)[..., None]
  return np.repeat(luma, images.shape[-1], axis=-1)


def _image_transform(fn):
  def variant(config, data, cfg):
    return config, dataclasses.replace(
        data, train_images=fn(data.train_images, cfg),
        test_images=fn(data.test_images, cfg))
  return variant


VARIANTS: dict[str, Callable[..., Any]] = {
    CONTROL: _reseed,
    'random_labels': _random_labels,
    'large_batch': _large_batch,
    'full_batch': _full_batch,
    'adam': _adam,
    'lowpass': _image_transform(
        lambda x, cfg: gaussian_lowpass(x, cfg.lowpass_sigma)),
    'grayscale': _image_transform(lambda x, cfg: to_grayscale(x)),
}


def _members_per_arch(ens: noise_floor.Ensemble) -> int:
  return min(len(ids) for ids in ens.arch_members.values())


def _test_acc(workdir: str, archs) -> dict[str, float]:
  acc = records.load(workdir, 'test', archs=list(archs)).correct[:, -1].mean(1)
  return {'test_acc_mean': float(acc.mean()),
          'test_acc_std': float(acc.std(ddof=1)) if acc.size > 1 else 0.0}


def window_probe_steps(config, vconfig, num_train: int):
  """(window probe steps, steps per epoch, total steps) of a probe's run.

  The window is the study's stretched to the run's length; with fused
  records as the source the "probes" are the epoch ends.
  """
  spe = ensemble.steps_per_epoch(vconfig, num_train)
  total = int(vconfig.epochs) * spe
  window = tuple(w * (vconfig.epochs / config.epochs)
                 for w in config.analysis.window)
  if config.analysis.source == 'probe':
    return (probe_schedule.window_steps(vconfig, spe, total, window), spe,
            total)
  return ([e * spe for e in range(1, int(vconfig.epochs) + 1)
           if window[0] < e <= window[1]], spe, total)


def match_window_probes(config, control, vconfig, num_train: int,
                        name: str = '') -> int:
  """Gives ``vconfig`` the control's window probe count; returns the count.

  A probe whose own schedule puts another number of probes in its window
  (full-batch training) is probed at the control's window probes' shares of
  training (probe_schedule.matched_steps), set as ``probe.at_steps``.

  Args:
    config: the study config (its analysis window).
    control: the control's config (the probes' recipe).
    vconfig: the probe's config, unlocked; changed in place.
    num_train: training examples.
    name: the probe's name (for the error).

  Raises:
    ValueError: the counts cannot be matched (fused records, or too few
      steps in the probe's window).
  """
  ref, _, ref_total = window_probe_steps(config, control, num_train)
  own, spe, total = window_probe_steps(config, vconfig, num_train)
  if len(own) != len(ref) and config.analysis.source == 'probe':
    hi = config.analysis.window[1] * (vconfig.epochs / config.epochs)
    vconfig.probe.at_steps = tuple(probe_schedule.matched_steps(
        ref, ref_total, total, min(total, math.floor(hi * spe + 1e-9))))
    own, _, _ = window_probe_steps(config, vconfig, num_train)
  if len(own) != len(ref):
    raise ValueError(
        f'Cause probe {stream(name)!r} would judge easiness '
        f'on {len(own)} window probes, its control on {len(ref)}: verdicts '
        'would reflect the probe count. With analysis.source='
        f'{config.analysis.source!r} they cannot be matched; use '
        "analysis.source='probe' or drop the variant.")
  return len(own)


def variant_config(config, cfg, name, archs, seeds, data):
  """(config, data) of one probe: the probes' recipe with its change.

  Args:
    config: the study config.
    cfg: ``config.causes``.
    name: the variant (a key of VARIANTS).
    archs, seeds: the probe's architectures and members per architecture.
    data: the study's dataset (sources.Dataset).

  Returns:
    The probe's config (window probes matched to the control's, see
    match_window_probes) and its dataset.
  """
  vconfig = copy.deepcopy(config)
  with vconfig.unlocked():
    vconfig.archs = ','.join(archs)
    vconfig.seeds_per_arch = seeds
    vconfig.epochs = cfg.epochs
    # Nothing reads a probe's states after its run: keep none.
    vconfig.analysis_checkpoints = 'none'
    vconfig, vdata = VARIANTS[name](vconfig, data, cfg)
    if name != CONTROL:
      control, _ = variant_config(config, cfg, CONTROL, archs, seeds, data)
      match_window_probes(config, control, vconfig,
                          len(vdata.train_labels), name)
  return vconfig, vdata


def _train(config, cfg, name, archs, seeds, data, subdir):
  """Trains one probe's members on their own random stream."""
  vconfig, vdata = variant_config(config, cfg, name, archs, seeds, data)
  logging.info('Cause probe %s: training %s x %d seeds.', name, archs, seeds)
  # Its own streams: no member replays a study member's (or another
  # probe's) init, data order or augmentation (members.Member.key).
  ensemble.record_study(vconfig, subdir, data=vdata,
                        probe_until=probe_until(config, vconfig),
                        stream=stream(name))
  return vconfig


def stream(name: str) -> str:
  """The random stream of cause probe ``name``, e.g. 'causes/adam'."""
  return f'causes/{name}'


def probe_until(config, vconfig) -> float:
  """The last epoch a probe's analysis reads a probe at (later: skipped).

  Easiness reads the train probes inside the study's window, stretched to
  the probe's length (as load_ensemble computes it), and the test accuracy
  the last probe, which is always taken; with fused records as the source
  only that last probe is read.
  """
  if config.analysis.source != 'probe':
    return 0.0
  return config.analysis.window[1] * (vconfig.epochs / config.epochs)


def _with_control(fig: dict[str, Any], control: dict[str, Any],
                  m: int) -> dict[str, Any]:
  """A probe's figures with the control's value, z and verdict beside each."""
  n, z_limit = control['members_per_arch'], control['threshold']
  fig['control'] = {f: control[f] for f in noise_floor.FIGURES}
  fig['vs_control'] = {
      f: noise_floor.departure(fig[f], control[f], n, m, z_limit)
      for f in noise_floor.FIGURES}
  for a, p in fig['per_arch'].items():
    ca = control['per_arch'][a]
    p['control'] = ca
    p['vs_control'] = {
        f: noise_floor.departure(p[f], ca[f], n, m,
                                 control['arch_threshold'])
        for f in ('easy_overlap_ratio', 'spearman')}
  fig['departs_from_control'] = [
      f for f in noise_floor.FIGURES if fig['vs_control'][f]['departs']]
  return fig


def _row(name: str, r: dict[str, Any]) -> dict[str, Any]:
  """The flat results.csv row of one probe."""
  row = {'variant': name, 'paired': False, 'epochs': r['epochs'],
         'members_per_arch': r['members_per_arch'],
         'window_probes': r['window_probes'],
         'control_window_probes': r['control_window_probes']}
  for f in noise_floor.FIGURES:
    c = r['control'][f]
    row.update({f: r[f], f'control_{f}': c['mean'],
                f'control_{f}_spread': c['spread'],
                f'z_{f}': r['vs_control'][f]['z']})
  row['baseline_cross_arch_easy_ratio'] = r['baseline_cross_arch_easy_ratio']
  row['departs_from_control'] = ';'.join(r['departs_from_control'])
  row.update(test_acc_mean=r['test_acc_mean'], test_acc_std=r['test_acc_std'])
  return row


def validate_config(config) -> None:
  """Raises ValueError naming the ``config.causes`` field that is wrong."""
  cfg = config.get('causes')
  if cfg is None:
    return
  unknown = [v for v in cfg.variants if v not in VARIANTS]
  if unknown:
    raise ValueError(f'Unknown config.causes.variants {unknown}; known: '
                     f'{sorted(VARIANTS)}.')
  for field in ('seeds', 'epochs', 'large_batch_size', 'full_batch_epochs'):
    config_fields.at_least(config, f'causes.{field}')
  study = config_fields.arch_list(config)
  outside = [a for a in models.arch_field(config, 'causes.archs')
             if a not in study]
  if outside:
    raise ValueError(f'config.causes.archs {outside} are not in the study '
                     '(config.archs); the baseline easiness comes from it.')


def run_causes(config, workdir: str) -> dict[str, Any]:
  """Trains the reseed control and every variant; compares them with the study.

  Every probe (the control included) trains ``causes.archs`` for
  ``causes.epochs`` epochs on a random stream of its own. Its figures come
  from ``causes.seeds`` members per architecture; the control's from each
  subset of as many of its members, which gives its value and seed spread
  (see noise_floor.py).
  """
  cfg = config.causes
  unknown = [v for v in cfg.variants if v not in VARIANTS]
  if unknown:
    raise ValueError(f'Unknown causes.variants {unknown}; known: '
                     f'{sorted(VARIANTS)}.')
  archs = config_fields.arch_list(config, 'causes.archs')
  missing = [a for a in archs if a not in config_fields.arch_list(config)]
  if missing:
    raise ValueError(f'causes.archs {missing} are not in the study '
                     '(config.archs); the baseline easiness comes from it.')
  if config.get('stream') and config.stream.enabled:
    raise ValueError(
        'The cause probes filter and relabel the training set in memory, '
        'which a streamed dataset (config.stream.enabled) is not; switch '
        'them off with config.stages.causes=False.')
  m = int(cfg.seeds)
  n_control = int(cfg.control_seeds) or max(int(config.seeds_per_arch), m + 1)
  if n_control <= m:
    raise ValueError(f'causes.control_seeds ({n_control}) must exceed '
                     f'causes.seeds ({m}): the control\'s seed spread comes '
                     'from its subsets of causes.seeds members.')
  data = sources.load_dataset(config)
  out_dir = os.path.join(workdir, 'causes')
  study = noise_floor.load_ensemble(workdir, archs, config.analysis)
  comparer = noise_floor.Comparer(config, study, data.train_labels,
                                  data.num_classes)
  limit = int(cfg.max_subsets)
  baseline_cross = noise_floor.study_cross_arch(comparer, study, m, limit)
  baseline_cross_all = comparer.cross_arch(study, study.all_members())

  # The control: the probes' recipe with fresh seeds (no change).
  cdir = os.path.join(out_dir, CONTROL)
  _train(config, cfg, CONTROL, archs, n_control, data, cdir)
  scale = cfg.epochs / config.epochs
  control_ens = noise_floor.load_ensemble(cdir, archs, config.analysis, scale)
  control = noise_floor.control_summary(comparer, control_ens, m, limit,
                                        cfg.departure_level)
  control_row = {f: control[f]['mean'] for f in noise_floor.FIGURES}
  control_row.update(
      per_arch={a: {f: v['mean'] for f, v in p.items()}
                for a, p in control['per_arch'].items()},
      epochs=int(cfg.epochs), members_per_arch=m,
      window_probes=control_ens.probes,
      control_window_probes=control_ens.probes,
      baseline_cross_arch_easy_ratio=baseline_cross,
      baseline_cross_arch_easy_ratio_all_members=baseline_cross_all,
      **_test_acc(cdir, archs))
  detail = {CONTROL: _with_control(control_row, control, m)}

  for name in cfg.variants:
    if name == CONTROL:
      continue
    subdir = os.path.join(out_dir, name)
    vconfig = _train(config, cfg, name, archs, m, data, subdir)
    ens = noise_floor.load_ensemble(subdir, archs, config.analysis,
                                    vconfig.epochs / config.epochs)
    if ens.probes != control_ens.probes:  # match_window_probes prevents it.
      raise ValueError(f'Cause probe {name}: {ens.probes} window probes, '
                       f'its control {control_ens.probes}.')
    fig = comparer.figures(ens, ens.all_members())
    fig.update(
        epochs=int(vconfig.epochs), members_per_arch=_members_per_arch(ens),
        window_probes=ens.probes, control_window_probes=control_ens.probes,
        baseline_cross_arch_easy_ratio=baseline_cross,
        baseline_cross_arch_easy_ratio_all_members=baseline_cross_all,
        **_test_acc(subdir, archs))
    detail[name] = _with_control(fig, control, m)
  verdicts = noise_floor.correct_verdicts(detail, CONTROL, control)
  rows = [_row(name, r) for name, r in detail.items()]
  # The study's own members (same architectures) as the reference.
  base = records.load(workdir, 'test', archs=archs).correct[:, -1].mean(1)
  out = {'archs': archs, 'seeds': m, 'members_per_arch': m,
         'control': {'name': CONTROL, 'epochs': int(cfg.epochs),
                     'members_per_arch': n_control,
                     'window_probes': control_ens.probes,
                     'subsets': control['subsets'], 'df': control['df'],
                     'departure_level': control['level'],
                     'departure_z': control['threshold']},
         'design': DESIGN, 'verdicts': verdicts, 'variants': detail,
         'rows': rows,
         'baseline': {'epochs': int(config.epochs),
                      'window_probes': study.probes,
                      'members': int(base.shape[0]),
                      'test_acc_mean': float(base.mean()),
                      'test_acc_std': float(base.std(ddof=1))
                                      if base.size > 1 else 0.0,
                      'cross_arch_easy_ratio': baseline_cross,
                      'cross_arch_easy_ratio_all_members': baseline_cross_all},
         'chance_test_acc': 1.0 / data.num_classes}
  # results.json last: the study takes it as the mark of a finished stage.
  files.atomic_write_csv(os.path.join(out_dir, 'results.csv'), rows)
  files.atomic_write_json(os.path.join(out_dir, 'results.json'), out)
  return out
