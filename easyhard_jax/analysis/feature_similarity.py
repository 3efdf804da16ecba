"""Within-set distances in feature space: easy tighter than hard?

The paper's first finding is that easy examples look alike and hard ones are
diverse. Pixels are one view (analysis/similarity.py); the network's own
view is its penultimate features, which ``--mode=checkpoint_probes`` saves
per member at every kept checkpoint
(``checkpoint_probes/features/{arch}_step{S}_{split}.npz``, float16
[members, N, D]).

* :func:`member_pairwise_distance`: one jitted kernel, the mean distance
  over distinct pairs of a set for every member at once ([M] out), via
  similarity.mean_pairwise_distance (L2 on set-centred rows, or cosine).
* :func:`choose_sets`: the easy, hard and random index sets of equal size
  (globally, per class, or class-balanced), drawn exactly as
  similarity.set_distances draws them, so with the same seed the pixel and
  the feature views compare the same examples.
* :func:`feature_set_distances`: the output of similarity.set_distances
  (``{'global': {'size', 'l2': {'easy', 'hard', 'random',
  'hard_over_easy'}, 'cosine': ...}, 'per_class': {c: ...}}``), each value
  the member average, with ``per_member`` lists beside them; for several
  architectures, ``by_arch`` results and a top level over all members.
* :func:`load_window_features`: the saved features at the end of the
  easiness window (the last kept checkpoint at or before it), or None.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from easyhard_jax.storage import files
from easyhard_jax.analysis import similarity

METRICS = similarity.METRICS
SET_NAMES = ('easy', 'hard', 'random')
_FEATURE_FILE = re.compile(r'(.+)_step(\d+)_(train|test)\.npz')


@functools.partial(jax.jit, static_argnames=('metric', 'block_size'))
def member_pairwise_distance(features: jax.Array, idx: jax.Array,
                             valid: jax.Array, *, metric: str = 'l2',
                             block_size: int = 256) -> jax.Array:
  """Mean distance over distinct pairs of the set's rows, per member.

  Args:
    features: [M, N, D] (or [M, N, ...], flattened), any float dtype
      (float16 is widened to float32); uint8 is scaled to [0, 1].
    idx: int32 [K], the set's rows (padding rows may repeat any index).
    valid: bool [K]; False marks padding.
    metric: 'l2' or 'cosine' (1 - cosine similarity).
    block_size: rows per block of the kernel.

  Returns:
    float32 [M]: each member's mean over ordered pairs i != j of valid rows.
  """
  x = features.reshape(features.shape[0], features.shape[1], -1)
  return jax.vmap(lambda f: similarity.mean_pairwise_distance(
      f, idx, valid, metric=metric, block_size=block_size))(x)


# The same sets as the pixel statistics (the same seed draws the same sets).
choose_sets = similarity.choose_sets


def _per_member(features: Sequence[jax.Array], chosen, metrics, block
                ) -> dict[str, dict[str, np.ndarray]]:
  """{metric: {set: float64 [sum of M]}} over every feature array."""
  out = {}
  for metric in metrics:
    out[metric] = {}
    for name in SET_NAMES:
      pidx, valid = similarity.padded_indices(chosen[name], block)
      out[metric][name] = np.concatenate([np.asarray(member_pairwise_distance(
          f, jnp.asarray(pidx), jnp.asarray(valid), metric=metric,
          block_size=block), np.float64) for f in features])
  return out


def _summary(values, size: int) -> dict[str, Any]:
  """set_distances' section format from per-member values."""
  out: dict[str, Any] = {'size': size, 'members': None, 'per_member': {}}
  for metric, per_set in values.items():
    res = {name: float(np.mean(v)) for name, v in per_set.items()}
    res['hard_over_easy'] = (res['hard'] / res['easy'] if res['easy'] > 0
                             else None)
    out[metric] = res
    out['per_member'][metric] = {name: v.tolist()
                                 for name, v in per_set.items()}
    out['members'] = int(per_set['easy'].size)
  return out


def feature_set_distances(features: Any, easy: np.ndarray, hard: np.ndarray,
                          labels: np.ndarray, *, seed: int = 0,
                          max_set_size: int = 5000, per_class: bool = True,
                          block_size: int = 256, class_balanced: bool = False,
                          metrics: Sequence[str] = METRICS
                          ) -> dict[str, Any]:
  """Easy, hard and random within-set distances in feature space.

  Args:
    features: [M, N, D] of one member group, or {arch: [M_a, N, D_a]}
      (feature widths may differ between architectures).
    easy, hard, labels: bool, bool, int [N] (as similarity.set_distances).
    seed, max_set_size, per_class, block_size, class_balanced, metrics: as
      similarity.set_distances (the same seed draws the same sets).

  Returns:
    similarity.set_distances' format, every value the mean over members
    (each section also has 'members' and 'per_member': {metric: {set:
    [M]}}); with several groups, the top level averages over all members
    of all groups and 'by_arch' holds each group's own result.
  """
  groups = (dict(features) if isinstance(features, Mapping)
            else {'features': features})
  arrays = {a: jnp.asarray(f) for a, f in groups.items()}
  for a, f in arrays.items():
    if f.ndim < 3 or f.shape[1] != np.shape(labels)[0]:
      raise ValueError(f'features {a!r} must be [members, {len(labels)}, D], '
                       f'got shape {f.shape}.')
  sets = choose_sets(easy, hard, labels, seed=seed, max_set_size=max_set_size,
                     per_class=per_class, class_balanced=class_balanced)

  def report(names):
    def section(chosen):
      if chosen is None:
        return None
      return _summary(_per_member([arrays[a] for a in names], chosen,
                                  metrics, block_size),
                      int(chosen['easy'].size))
    g = section(sets['global'])
    out = {'global': g if g is not None else {
        'skipped': 'easy or hard set has fewer than 2 examples'}}
    out['global']['class_balanced'] = bool(class_balanced)
    if per_class:
      out['per_class'] = {c: section(ch)
                          for c, ch in sets['per_class'].items()}
    return out

  out = report(list(arrays))
  if isinstance(features, Mapping) and len(arrays) > 1:
    out['by_arch'] = {a: report([a]) for a in arrays}
  return out


@dataclasses.dataclass(frozen=True)
class WindowFeatures:
  """Saved penultimate features of one checkpoint step.

  Attributes:
    features: {arch: float16 [members, N, D]}.
    step: the checkpoint's global train step.
    epoch: the same in epochs.
    split: 'train' or 'test'.
  """
  features: dict[str, np.ndarray]
  step: int
  epoch: float
  split: str


def window_end_step(window: Sequence[float], steps_per_epoch: int) -> int:
  """The global step of the easiness window's end (as the checkpoints)."""
  return int(math.ceil(float(window[1]) * steps_per_epoch))


def load_window_features(workdir: str, window: Sequence[float],
                         split: str = 'train',
                         archs: Sequence[str] | None = None
                         ) -> WindowFeatures | None:
  """Features at the window's end, when checkpoint_probes saved them.

  The step is the latest one inside the window (epochs ``(lo, hi]``, the
  end rounded up to a step as the analysis checkpoints are) that every
  architecture has; None when there is none.
  """
  root = os.path.join(workdir, 'checkpoint_probes')
  directory = os.path.join(root, 'features')
  manifest_path = os.path.join(root, 'records', 'manifest.json')
  if not (files.isdir(directory) and files.exists(manifest_path)):
    return None
  manifest = files.read_json(manifest_path, 'rerun --mode=checkpoint_probes.')
  names = list(archs or manifest.get('arch_order', []))
  if not names or any(a not in manifest['archs'] for a in names):
    return None
  spe = manifest['archs'][names[0]]['steps_per_epoch']
  have: dict[str, set[int]] = {}
  for name in files.listdir(directory):
    m = _FEATURE_FILE.fullmatch(name)
    if m and m[3] == split:
      have.setdefault(m[1], set()).add(int(m[2]))
  common = set.intersection(*(have.get(a, set()) for a in names))
  start, end = float(window[0]) * spe, window_end_step(window, spe)
  candidates = [s for s in common if start < s <= end]
  if not candidates:
    return None
  step = max(candidates)
  feats = {}
  for a in names:
    with files.np_load(
        os.path.join(directory, f'{a}_step{step}_{split}.npz')) as z:
      feats[a] = z['features']
  return WindowFeatures(features=feats, step=step, epoch=step / float(spe),
                        split=split)
