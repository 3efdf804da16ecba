"""Visual similarity of easy and hard sets: distances, colour, frequency.

* :func:`mean_pairwise_distance`: mean distance over all distinct pairs of a
  set of rows of a feature matrix [N, D] (flattened pixels, or any features
  the caller passes, e.g. penultimate activations), L2 or cosine. Blocked:
  row blocks of the set against the whole set, ||a||^2 + ||b||^2 - 2 a.b per
  block, summed; the K x K matrix never exists. L2 is computed on the
  set-centred rows (distances do not change; the subtraction of large norms
  does cancel less). Cosine distance is 1 - cos on the raw rows.
* :func:`colour_stats`: per-channel mean and std over every pixel of a set.
* :func:`high_frequency_fraction`: per image, the fraction of 2D FFT power
  (summed over channels) at normalized radius > cutoff cycles/pixel.
* :func:`class_mean_images`: the mean image of each class within a set.
* :func:`set_distances`: easy vs hard vs random sets of equal size (and,
  for class-balanced sets, equal class composition), globally and per class,
  for the stage.

uint8 inputs are scaled to [0, 1]; others are used as given.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

_HI = jax.lax.Precision.HIGHEST
METRICS = ('l2', 'cosine')


def _as_float(x: jax.Array) -> jax.Array:
  if x.dtype == jnp.uint8:
    return x.astype(jnp.float32) / 255.0
  return x.astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=('metric', 'block_size'))
def mean_pairwise_distance(x: jax.Array, idx: jax.Array, valid: jax.Array, *,
                           metric: str = 'l2',
                           block_size: int = 256) -> jax.Array:
  """Mean distance over distinct pairs of the valid rows ``x[idx]``.

  Args:
    x: [N, D] features (or [N, ...], flattened).
    idx: int32 [K], the set's rows (padding rows may repeat any index).
    valid: bool [K]; False marks padding.
    metric: 'l2' (Euclidean) or 'cosine' (1 - cosine similarity).
    block_size: rows per block; memory is O(block_size * K + K * D).

  Returns:
    float32 scalar: the mean over ordered pairs i != j of valid rows (NaN if
    fewer than two).
  """
  if metric not in METRICS:
    raise ValueError(f'metric must be one of {METRICS}, got {metric!r}')
  x = x.reshape(x.shape[0], -1)
  k = idx.shape[0]
  kp = -(-k // block_size) * block_size
  idx = jnp.pad(idx, (0, kp - k))
  w = jnp.pad(valid.astype(jnp.float32), (0, kp - k))
  xs = _as_float(x[idx]) * w[:, None]
  if metric == 'l2':
    centre = jnp.sum(xs, axis=0) / jnp.maximum(jnp.sum(w), 1.0)
    xs = (xs - centre) * w[:, None]
    sq = jnp.sum(xs * xs, axis=1)
  else:
    norm = jnp.sqrt(jnp.sum(xs * xs, axis=1, keepdims=True))
    xs = xs / jnp.where(norm > 0, norm, 1.0)
  cols = jnp.arange(kp)

  def block(i):
    start = i * block_size
    xb = jax.lax.dynamic_slice_in_dim(xs, start, block_size)
    wb = jax.lax.dynamic_slice_in_dim(w, start, block_size)
    g = jnp.matmul(xb, xs.T, precision=_HI)  # [block, Kp]
    if metric == 'l2':
      sqb = jax.lax.dynamic_slice_in_dim(sq, start, block_size)
      d = jnp.sqrt(jnp.maximum(sqb[:, None] + sq[None, :] - 2.0 * g, 0.0))
    else:
      d = 1.0 - g
    rows = start + jnp.arange(block_size)
    pair = wb[:, None] * w[None, :] * (rows[:, None] != cols[None, :])
    return jnp.sum(jnp.sum(d * pair, axis=1))

  totals = jax.lax.map(block, jnp.arange(kp // block_size))
  n = jnp.sum(w)
  return jnp.sum(totals) / (n * (n - 1.0))


def _chunked_sum(fn, images: jax.Array, weights: jax.Array,
                 chunk: int) -> jax.Array:
  """sum_n weights[n] * fn(images[n]) as [D], a matvec per chunk of rows.

  A masked reduction over the leading axes of [N, H, W, C] ran ~40x slower
  on XLA:CPU than these chunked matvecs.
  """
  n = images.shape[0]
  flat = images.reshape(n, -1)
  full = n // chunk

  def part(xs, ws):
    return jnp.matmul(ws.astype(jnp.float32), fn(_as_float(xs)),
                      precision=_HI)

  def body(i, acc):
    xs = jax.lax.dynamic_slice_in_dim(flat, i * chunk, chunk)
    ws = jax.lax.dynamic_slice_in_dim(weights, i * chunk, chunk)
    return acc + part(xs, ws)

  acc = jax.lax.fori_loop(0, full, body,
                          jnp.zeros((flat.shape[1],), jnp.float32))
  if n % chunk:
    acc = acc + part(flat[full * chunk:], weights[full * chunk:])
  return acc


@functools.partial(jax.jit, static_argnames='chunk')
def colour_stats(images: jax.Array, mask: jax.Array, *,
                 chunk: int = 1024) -> tuple[jax.Array, jax.Array]:
  """Per-channel mean and population std over every pixel of a set.

  Args:
    images: [N, H, W, C] (or [N, H, W]: one channel).
    mask: bool [N], the set.
    chunk: images per matvec.

  Returns:
    (mean float32 [C], std float32 [C]); NaN for an empty set.
  """
  if images.ndim == 3:
    images = images[..., None]
  c = images.shape[-1]
  chunk = max(1, min(chunk, images.shape[0]))
  count = jnp.sum(mask.astype(jnp.float32)) * images.shape[1] * images.shape[2]
  per_channel = lambda flat_sum: jnp.sum(flat_sum.reshape(-1, c), axis=0)
  mean = per_channel(_chunked_sum(lambda x: x, images, mask, chunk)) / count
  centre = jnp.tile(mean, images.shape[1] * images.shape[2])
  # Second pass about the mean: no cancellation in E[x^2] - E[x]^2.
  sq = _chunked_sum(lambda x: jnp.square(x - centre), images, mask, chunk)
  return mean, jnp.sqrt(per_channel(sq) / count)


@jax.jit
def high_frequency_fraction(images: jax.Array, cutoff: float | jax.Array,
                            remove_mean: bool | jax.Array = True
                            ) -> jax.Array:
  """Fraction of each image's spectral power above a frequency radius.

  Args:
    images: [B, H, W, C] or [B, H, W].
    cutoff: radius in cycles per pixel (0 < cutoff < 0.71); frequencies come
      from ``fftfreq`` per axis, so the Nyquist radius is 0.5 per axis.
    remove_mean: subtract each image's per-channel mean first, so the DC term
      (brightness) does not dominate the denominator.

  Returns:
    float32 [B]; 0 for an image with no power (a constant image).
  """
  if images.ndim == 3:
    images = images[..., None]
  x = _as_float(images)
  x = jnp.where(remove_mean, x - jnp.mean(x, axis=(1, 2), keepdims=True), x)
  f = jnp.fft.fft2(x, axes=(1, 2))
  power = jnp.sum(jnp.real(f) ** 2 + jnp.imag(f) ** 2, axis=-1)  # [B, H, W]
  fy = jnp.fft.fftfreq(x.shape[1])[:, None]
  fx = jnp.fft.fftfreq(x.shape[2])[None, :]
  high = jnp.sqrt(fy ** 2 + fx ** 2) > cutoff
  total = jnp.sum(power, axis=(1, 2))
  hi = jnp.sum(jnp.where(high[None], power, 0.0), axis=(1, 2))
  return jnp.where(total > 0, hi / jnp.where(total > 0, total, 1.0), 0.0)


def per_image_high_frequency(images: np.ndarray, cutoff: float,
                             remove_mean: bool = True,
                             chunk: int = 1024) -> np.ndarray:
  """:func:`high_frequency_fraction` over a split in fixed-size chunks.

  Args:
    images: [N, H, W, C] or [N, H, W].
    cutoff: as in :func:`high_frequency_fraction`.
    remove_mean: as in :func:`high_frequency_fraction`.
    chunk: images per call (the last chunk is padded: one compilation).

  Returns:
    float32 [N].
  """
  images = np.asarray(images)
  n = images.shape[0]
  chunk = max(1, min(chunk, n))
  out = []
  for s in range(0, n, chunk):
    part = images[s:s + chunk]
    if part.shape[0] < chunk:
      pad = np.zeros((chunk - part.shape[0],) + part.shape[1:], part.dtype)
      part = np.concatenate([part, pad])
    out.append(np.asarray(high_frequency_fraction(part, cutoff, remove_mean)))
  return np.concatenate(out)[:n]


@functools.partial(jax.jit, static_argnames='num_classes')
def _class_sums(images, labels, mask, *, num_classes):
  onehot = ((labels[:, None] == jnp.arange(num_classes)[None, :])
            & mask[:, None]).astype(jnp.float32)
  flat = _as_float(images).reshape(images.shape[0], -1)
  return (jnp.matmul(onehot.T, flat, precision=_HI),
          jnp.sum(onehot, axis=0))


def class_mean_images(images: np.ndarray, labels: np.ndarray, mask: Any,
                      num_classes: int,
                      chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
  """Mean image of each class among the examples of a set.

  Args:
    images: [N, H, W, C] (or [N, H, W]).
    labels: int [N].
    mask: bool [N], the set.
    num_classes: K.
    chunk: images per jitted step (bounds the float32 copy).

  Returns:
    (means float32 [K, H, W, C] with NaN for classes absent from the set,
    counts int64 [K]).
  """
  images = np.asarray(images)
  if images.ndim == 3:
    images = images[..., None]
  labels = np.asarray(labels, np.int32)
  mask = np.asarray(mask, bool)
  n = images.shape[0]
  chunk = max(1, min(chunk, n))
  sums = np.zeros((num_classes, int(np.prod(images.shape[1:]))), np.float64)
  counts = np.zeros((num_classes,), np.float64)
  for s in range(0, n, chunk):
    sl = slice(s, s + chunk)
    im, lb, mk = images[sl], labels[sl], mask[sl]
    if im.shape[0] < chunk:
      pad = chunk - im.shape[0]
      im = np.concatenate([im, np.zeros((pad,) + im.shape[1:], im.dtype)])
      lb = np.concatenate([lb, np.zeros((pad,), np.int32)])
      mk = np.concatenate([mk, np.zeros((pad,), bool)])
    sm, ct = _class_sums(im, lb, mk, num_classes=num_classes)
    sums += np.asarray(sm, np.float64)
    counts += np.asarray(ct, np.float64)
  with np.errstate(invalid='ignore', divide='ignore'):
    means = (sums / counts[:, None]).astype(np.float32)
  return means.reshape((num_classes,) + images.shape[1:]), counts.astype(
      np.int64)


def padded_indices(idx: np.ndarray, block: int
                   ) -> tuple[np.ndarray, np.ndarray]:
  """(int32 indices padded to a multiple of ``block``, bool valid mask).

  Sets of similar size then share one compilation of the distance kernels
  (here and in feature_similarity); padding rows point at index 0.
  """
  k = idx.size
  kp = max(block, -(-k // block) * block)
  out = np.zeros((kp,), np.int32)
  out[:k] = idx
  return out, np.arange(kp) < k


def _subsample(rng: np.random.Generator, idx: np.ndarray, k: int) -> np.ndarray:
  if idx.size <= k:
    return idx
  return np.sort(rng.choice(idx, size=k, replace=False))


def _distances(x, chosen: Mapping[str, np.ndarray], metrics: Sequence[str],
               block: int) -> dict[str, Any]:
  out: dict[str, Any] = {'size': int(next(iter(chosen.values())).size)}
  for metric in metrics:
    res = {}
    for name, idx in chosen.items():
      pidx, valid = padded_indices(idx, block)
      res[name] = float(mean_pairwise_distance(
          x, jnp.asarray(pidx), jnp.asarray(valid), metric=metric,
          block_size=block))
    res['hard_over_easy'] = (res['hard'] / res['easy'] if res['easy'] > 0
                             else None)
    out[metric] = res
  return out


def stratified_counts(easy: np.ndarray, hard: np.ndarray, labels: np.ndarray,
                      cap: int) -> np.ndarray:
  """Per-class sample sizes min(|easy_c|, |hard_c|), scaled to sum <= cap.

  Args:
    easy: bool [N].
    hard: bool [N].
    labels: int [N] (non-negative).
    cap: the largest total.

  Returns:
    int64 [C].
  """
  c = int(labels.max()) + 1 if labels.size else 0
  k = np.minimum(np.bincount(labels[easy], minlength=c),
                 np.bincount(labels[hard], minlength=c)).astype(np.int64)
  if k.sum() > cap:
    k = np.floor(k * (cap / k.sum())).astype(np.int64)
  return k


def set_distances(x: Any, easy: np.ndarray, hard: np.ndarray,
                  labels: np.ndarray, *, seed: int = 0,
                  max_set_size: int = 5000, per_class: bool = True,
                  block_size: int = 256, class_balanced: bool = False,
                  metrics: Sequence[str] = METRICS) -> dict[str, Any]:
  """Mean within-set distances of easy, hard and random sets of equal size.

  Global section: each set is subsampled (without replacement) to k =
  min(|easy|, |hard|, max_set_size) and the random set is k examples of the
  split. With ``class_balanced`` (sets chosen k_c per class), the three sets
  instead get the same class composition: k_c = min(|easy_c|, |hard_c|) per
  class (scaled to the cap), the random set k_c random examples of each
  class, so no difference between them can come from class alone. The
  per-class sections compare within one class.

  Args:
    x: [N, ...] images or features (one row per example, example order).
    easy: bool [N].
    hard: bool [N].
    labels: int [N].
    seed: numpy seed of the subsampling.
    max_set_size: cap on k.
    per_class: also within each class.
    block_size: kernel row block.
    class_balanced: match the class composition of the three global sets.
    metrics: subset of ('l2', 'cosine').

  Returns:
    {'global': {...}, 'per_class': {class: {...} or None}} with, per metric,
    the easy, hard and random means and hard_over_easy; ``global`` also
    says whether it was ``class_balanced``.
  """
  xj = jnp.asarray(x)
  chosen = choose_sets(easy, hard, labels, seed=seed,
                       max_set_size=max_set_size, per_class=per_class,
                       class_balanced=class_balanced)
  dist = lambda c: None if c is None else _distances(xj, c, metrics,
                                                     block_size)
  g = dist(chosen['global'])
  out = {'global': g if g is not None else {
      'skipped': 'easy or hard set has fewer than 2 examples'}}
  out['global']['class_balanced'] = bool(class_balanced)
  if per_class:
    out['per_class'] = {c: dist(v) for c, v in chosen['per_class'].items()}
  return out


def choose_sets(easy: np.ndarray, hard: np.ndarray, labels: np.ndarray, *,
                seed: int = 0, max_set_size: int = 5000,
                per_class: bool = True, class_balanced: bool = False
                ) -> dict[str, Any]:
  """The index sets :func:`set_distances` compares (feature views reuse them).

  Returns:
    {'global': {'easy', 'hard', 'random': int [k]} or None, 'per_class':
    {class: same or None}} (per_class only when asked); None where the
    easy or the hard set has fewer than 2 examples.
  """
  rng = np.random.default_rng(seed)
  easy, hard = np.asarray(easy, bool), np.asarray(hard, bool)
  labels = np.asarray(labels)
  n = labels.shape[0]

  def section(sel):
    pools = {'easy': np.flatnonzero(easy & sel),
             'hard': np.flatnonzero(hard & sel),
             'random': np.flatnonzero(sel)}
    k = min(pools['easy'].size, pools['hard'].size, max_set_size)
    if k < 2:
      return None
    return {name: _subsample(rng, idx, k) for name, idx in pools.items()}

  def balanced():
    counts = stratified_counts(easy, hard, labels, max_set_size)
    if counts.sum() < 2:
      return None
    return {name: np.sort(np.concatenate([
        _subsample(rng, np.flatnonzero(pool & (labels == c)), int(k))
        for c, k in enumerate(counts)]))
            for name, pool in (('easy', easy), ('hard', hard),
                               ('random', np.ones((n,), bool)))}

  out = {'global': balanced() if class_balanced else section(
      np.ones((n,), bool))}
  if per_class:
    out['per_class'] = {int(c): section(labels == c)
                        for c in np.unique(labels)}
  return out


def colour_and_frequency(images: np.ndarray, sets: Mapping[str, np.ndarray],
                         *, hf_cutoff: float = 0.25,
                         hf_remove_mean: bool = True) -> dict[str, Any]:
  """Colour statistics and high-frequency energy of each named set.

  Args:
    images: [N, H, W, C] or [N, H, W].
    sets: {name: bool [N]}.
    hf_cutoff: see :func:`high_frequency_fraction`.
    hf_remove_mean: see :func:`high_frequency_fraction`.

  Returns:
    {'colour': {set: {'mean': [C], 'std': [C]}}, 'high_frequency': {set:
    {'mean', 'std', 'size'}}, 'hf_cutoff': cutoff}.
  """
  imj = jnp.asarray(images)
  hf = per_image_high_frequency(images, hf_cutoff, hf_remove_mean)
  colour, freq = {}, {}
  for name, mask in sets.items():
    mask = np.asarray(mask, bool)
    if not mask.any():
      colour[name] = freq[name] = None
      continue
    mean, std = colour_stats(imj, jnp.asarray(mask))
    colour[name] = {'mean': np.asarray(mean), 'std': np.asarray(std)}
    freq[name] = {'mean': float(hf[mask].mean()), 'std': float(hf[mask].std()),
                  'size': int(mask.sum())}
  return {'colour': colour, 'high_frequency': freq,
          'hf_cutoff': float(hf_cutoff), 'hf_remove_mean': bool(hf_remove_mean)}
