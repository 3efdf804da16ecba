"""On-device batching, normalisation and augmentation.

The uint8 dataset lives on the device; a batch is a gather by example index, so
the host never touches pixels during training. Every random choice takes an
explicit key derived with ``fold_in`` (member, epoch, step), so two members see
different orders and augmentations and a resumed run sees the same ones.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """Static augmentation settings (hashable, so they can be jit-static)."""
  crop_padding: int = 0     # Random crop after zero padding by this many px.
  horizontal_flip: bool = False


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and std of uint8 images, in [0, 1] units (float32)."""
  x = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
  mean, std = x.mean(0), x.std(0)
  return mean.astype(np.float32), np.maximum(std, 1e-3).astype(np.float32)


def normalize(images: jax.Array, mean: jax.Array, std: jax.Array,
              dtype=jnp.float32) -> jax.Array:
  """uint8 [..., C] -> standardised float of ``dtype``."""
  x = images.astype(jnp.float32) / 255.0
  return ((x - mean) / std).astype(dtype)


def epoch_permutation(key: jax.Array, keep: jax.Array) -> jax.Array:
  """A member's example order for one epoch (int32 [N]).

  Examples with ``keep`` True come first, in random order; the excluded ones
  (a member's removed subset) follow and are never drawn by batch_indices.
  """
  u = jax.random.uniform(key, keep.shape)
  return jnp.argsort(jnp.where(keep, u, 2.0)).astype(jnp.int32)


def batch_indices(perm: jax.Array, step_in_epoch: jax.Array, batch_size: int,
                  num_kept: jax.Array | int | None = None
                  ) -> tuple[jax.Array, jax.Array]:
  """Example indices of one training batch and its padding mask.

  Step s of an epoch takes positions s*B .. s*B+B-1 of the first num_kept
  entries of ``perm``. The last batch of an epoch is padded, not wrapped:
  its positions past num_kept repeat the last kept example and are marked
  invalid, so every kept example is presented exactly once per epoch. The
  train step gives invalid rows zero weight in the loss, the gradient and
  the BatchNorm statistics, and does not record them (docs/records.md).

  Returns:
    (indices int32 [B], valid bool [B]).
  """
  n = perm.shape[0] if num_kept is None else num_kept
  pos = step_in_epoch * batch_size + jnp.arange(batch_size)
  valid = pos < n
  return perm[jnp.minimum(pos, n - 1)], valid


def augment(key: jax.Array, images: jax.Array, cfg: AugmentConfig) -> jax.Array:
  """Random crop with zero padding and horizontal flip, per example."""
  if cfg.crop_padding == 0 and not cfg.horizontal_flip:
    return images
  b, h, w, _ = images.shape
  crop_key, flip_key = jax.random.split(key)
  if cfg.crop_padding:
    p = cfg.crop_padding
    padded = jnp.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))
    offsets = jax.random.randint(crop_key, (b, 2), 0, 2 * p + 1)

    def crop(img, off):
      return jax.lax.dynamic_slice(img, (off[0], off[1], 0),
                                   (h, w, img.shape[-1]))

    images = jax.vmap(crop)(padded, offsets)
  if cfg.horizontal_flip:
    flip = jax.random.bernoulli(flip_key, 0.5, (b, 1, 1, 1))
    images = jnp.where(flip, images[:, :, ::-1, :], images)
  return images
