"""Cause probes: do easy and hard examples come from dataset bias or from SGD?

Each variant retrains the ensemble (``causes.archs`` x ``causes.seeds``) with
one change and records it like the study, in ``WORKDIR/causes/{variant}/``:

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

Easiness of a variant is taken over the same share of its training as the
study's window (the window in epochs is scaled by the ratio of epochs).
For every variant it reports, per architecture and overall, the overlap of its
easy (and hard) set with the baseline study's, as a ratio to the overlap
expected by chance, the Spearman correlation of easiness with the baseline,
the cross-architecture easy-set agreement within the variant, and test
accuracy; ``baseline`` holds the study members' test accuracy and
``chance_test_acc`` 1 / classes. Results: ``WORKDIR/causes/results.json``
(written last) and ``results.csv``; the report draws them as one figure.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from typing import Any, Callable

import jax.numpy as jnp
import numpy as np
from absl import logging

from easyhard_jax import records
from easyhard_jax.analysis import agreement
from easyhard_jax.analysis import scores as scores_lib
from easyhard_jax.analysis import sets as sets_lib
from easyhard_jax.data import sources
from easyhard_jax.train import config_checks
from easyhard_jax.train import ensemble


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
  # One step per epoch: probe at about as many points as the study does.
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
    'random_labels': _random_labels,
    'large_batch': _large_batch,
    'full_batch': _full_batch,
    'adam': _adam,
    'lowpass': _image_transform(
        lambda x, cfg: gaussian_lowpass(x, cfg.lowpass_sigma)),
    'grayscale': _image_transform(lambda x, cfg: to_grayscale(x)),
}


def _arch_easiness(workdir, archs, cfg_analysis, scale=1.0):
  """(example easiness [N], per-arch easiness [G, N], aum [N], arch names).

  ``scale`` stretches the easiness window (in epochs) for a variant trained
  for a different number of epochs, so "early" is the same share of training.
  """
  rec = records.load(workdir, 'train', source=cfg_analysis.source,
                     archs=archs)
  window = tuple(w * scale for w in cfg_analysis.window)
  sc = scores_lib.compute_scores(rec, window, cfg_analysis.dynamics_window)
  return (sc['example']['easiness'], sc['arch']['easiness'],
          sc['example']['aum'], sc['arch']['aum'], sc['archs'])


def _sets(rule, easiness, aum, labels, num_classes):
  k = rule.resolve_k(labels, num_classes)
  easy, hard = sets_lib.easy_hard_masks(
      dataclasses.replace(rule, score='easiness'), easiness, labels=labels,
      num_classes=num_classes, k=k, tiebreak=aum)
  return np.asarray(easy), np.asarray(hard)


def _ratio(a, b):
  """Overlap ratio to chance of each row of a with the same row of b."""
  m = agreement.overlap_matrix(jnp.asarray(a), jnp.asarray(b))
  return np.diag(np.asarray(m['ratio']))


def _offdiag_mean(mat):
  mat = np.asarray(mat)
  if mat.shape[0] < 2:
    return None
  return float(mat[~np.eye(mat.shape[0], dtype=bool)].mean())


def compare(config, base_dir, variant_dir, archs, labels, num_classes,
            window_scale=1.0):
  """Easy/hard agreement of a variant's records with the baseline's."""
  cfg_a = config.analysis
  rule = sets_lib.SetRule.from_config(cfg_a.sets)
  b_ex, b_arch, b_aum, b_arch_aum, _ = _arch_easiness(base_dir, archs, cfg_a)
  v_ex, v_arch, v_aum, v_arch_aum, names = _arch_easiness(
      variant_dir, archs, cfg_a, window_scale)
  be, bh = _sets(rule, b_ex, b_aum, labels, num_classes)
  ve, vh = _sets(rule, v_ex, v_aum, labels, num_classes)
  bae, _ = _sets(rule, b_arch, b_arch_aum, labels, num_classes)
  vae, _ = _sets(rule, v_arch, v_arch_aum, labels, num_classes)
  rho = np.asarray(agreement.spearman_matrix(
      jnp.asarray(np.stack([v_ex])), jnp.asarray(np.stack([b_ex]))))[0, 0]
  rho_arch = np.diag(np.asarray(agreement.spearman_matrix(
      jnp.asarray(v_arch), jnp.asarray(b_arch))))
  cross_v = agreement.overlap_matrix(jnp.asarray(vae), jnp.asarray(vae))
  cross_b = agreement.overlap_matrix(jnp.asarray(bae), jnp.asarray(bae))
  return {
      'easy_overlap_ratio': float(_ratio(ve[None], be[None])[0]),
      'hard_overlap_ratio': float(_ratio(vh[None], bh[None])[0]),
      'spearman_easiness': float(rho),
      'per_arch': {a: {'easy_overlap_ratio': float(r), 'spearman': float(s)}
                   for a, r, s in zip(names, _ratio(vae, bae), rho_arch)},
      'cross_arch_easy_ratio': _offdiag_mean(cross_v['ratio']),
      'baseline_cross_arch_easy_ratio': _offdiag_mean(cross_b['ratio']),
  }


def run_causes(config, workdir: str) -> dict[str, Any]:
  """Retrains every configured variant and compares it with the study."""
  cfg = config.causes
  unknown = [v for v in cfg.variants if v not in VARIANTS]
  if unknown:
    raise ValueError(f'Unknown causes.variants {unknown}; known: '
                     f'{sorted(VARIANTS)}.')
  archs = (config_checks.arch_list(config) if cfg.archs == 'study'
           else [a.strip() for a in cfg.archs.split(',')])
  missing = [a for a in archs if a not in config_checks.arch_list(config)]
  if missing:
    raise ValueError(f'causes.archs {missing} are not in the study '
                     '(config.archs); the baseline easiness comes from it.')
  if config.get('stream') and config.stream.enabled:
    raise ValueError(
        'The cause probes filter and relabel the training set in memory, '
        'which a streamed dataset (config.stream.enabled) is not; switch '
        'them off with config.stages.probe_causes=False.')
  data = sources.load_dataset(config)
  out_dir = os.path.join(workdir, 'causes')
  rows, detail = [], {}
  for name in cfg.variants:
    vconfig = copy.deepcopy(config)
    with vconfig.unlocked():
      vconfig.archs = ','.join(archs)
      vconfig.seeds_per_arch = cfg.seeds
      vconfig.epochs = cfg.epochs
      vconfig, vdata = VARIANTS[name](vconfig, data, cfg)
    subdir = os.path.join(out_dir, name)
    logging.info('Cause probe %s: training %s x %d seeds.', name, archs,
                 cfg.seeds)
    ensemble.record_study(vconfig, subdir, data=vdata)
    result = compare(config, workdir, subdir, archs, data.train_labels,
                     data.num_classes,
                     window_scale=vconfig.epochs / config.epochs)
    test = records.load(subdir, 'test')
    acc = test.correct[:, -1].mean(axis=1)
    result.update(epochs=int(vconfig.epochs),
                  test_acc_mean=float(acc.mean()),
                  test_acc_std=float(acc.std()))
    detail[name] = result
    rows.append({'variant': name, **{k: v for k, v in result.items()
                                     if k != 'per_arch'}})
  # The study's own members (same architectures) as the reference.
  base = records.load(workdir, 'test', archs=archs).correct[:, -1].mean(1)
  out = {'archs': archs, 'seeds': cfg.seeds, 'variants': detail,
         'rows': rows,
         'baseline': {'epochs': int(config.epochs),
                      'members': int(base.shape[0]),
                      'test_acc_mean': float(base.mean()),
                      'test_acc_std': float(base.std())},
         'chance_test_acc': 1.0 / data.num_classes}
  # results.json last: the study takes it as the mark of a finished stage.
  records.atomic_write_csv(os.path.join(out_dir, 'results.csv'), rows)
  records.atomic_write_json(os.path.join(out_dir, 'results.json'), out)
  return out


def default_causes_config():
  """The cause-probe knobs (embedded in configs/default.py)."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  c = ml_collections.ConfigDict()
  c.variants = ('random_labels', 'large_batch', 'adam', 'lowpass',
                'grayscale')      # Also: full_batch (small datasets).
  c.archs = 'study'               # Subset of config.archs (>= 2 for agreement).
  c.seeds = 2                     # Seeds per architecture in each variant.
  c.epochs = 30                   # Epochs of each variant's training.
  c.label_seed = 0                # random_labels permutation.
  c.large_batch_size = 1024
  c.full_batch_epochs = 200
  c.adam_learning_rate = 1e-3
  c.lowpass_sigma = 1.0           # Gaussian blur, pixels.
  return c
