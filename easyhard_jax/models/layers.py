"""Building blocks shared by every model in :mod:`easyhard_jax.models`.

The helpers here fix the conventions all architectures follow: torchvision-style
He (fan_out) initialisation for convolutions, BatchNorm with PyTorch's default
momentum/epsilon, channel scaling by a width multiplier, and downsampling that
never shrinks a spatial dimension below one pixel so that any input size works.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

Dtype = Any

#: He/kaiming normal with fan_out, as ``torch.nn.init.kaiming_normal_(
#: mode='fan_out', nonlinearity='relu')`` in torchvision (JAX's 'normal' is untruncated).
conv_kernel_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def scale_channels(channels: int, width: float) -> int:
  """Scales a base channel count by a width multiplier.

  Args:
    channels: Channel count of the reference (width 1.0) architecture.
    width: Positive width multiplier.

  Returns:
    ``round(channels * width)``, but at least 1.

  Raises:
    ValueError: If ``width`` is not positive.
  """
  if not width > 0:
    raise ValueError(f'width must be > 0 (e.g. 1.0 or 0.25); got {width!r}.')
  return max(1, int(round(channels * width)))


def downsample_factors(spatial_shape: Sequence[int], factor: int = 2) -> tuple[int, ...]:
  """Per-dimension downsampling factors that never shrink a dim below 1 pixel.

  A spatial dimension is reduced by ``factor`` only while it is at least
  ``factor`` pixels long; otherwise its factor is 1 (the reduction is skipped).

  Args:
    spatial_shape: Spatial dims of the activation, e.g. ``(H, W)``.
    factor: Nominal stride / pooling window.

  Returns:
    A tuple with one stride per spatial dimension.
  """
  return tuple(factor if d >= factor else 1 for d in spatial_shape)


def safe_max_pool(x: jnp.ndarray, factor: int = 2) -> jnp.ndarray:
  """Non-overlapping max-pool (window = stride = ``factor``) of an NHWC tensor.

  Dimensions shorter than ``factor`` are left untouched. Odd sizes are floored,
  as in ``torch.nn.MaxPool2d``.

  Args:
    x: Activations ``[B, H, W, C]``.
    factor: Pooling window and stride.

  Returns:
    The pooled activations.
  """
  window = downsample_factors(x.shape[1:-1], factor)
  if all(w == 1 for w in window):
    return x
  return nn.max_pool(x, window_shape=window, strides=window, padding='VALID')


def safe_avg_pool(x: jnp.ndarray, factor: int = 2) -> jnp.ndarray:
  """Non-overlapping average-pool of an NHWC tensor; see :func:`safe_max_pool`.

  Args:
    x: Activations ``[B, H, W, C]``.
    factor: Pooling window and stride.

  Returns:
    The pooled activations.
  """
  window = downsample_factors(x.shape[1:-1], factor)
  if all(w == 1 for w in window):
    return x
  return nn.avg_pool(x, window_shape=window, strides=window, padding='VALID')


def global_avg_pool(x: jnp.ndarray) -> jnp.ndarray:
  """Averages over all spatial dims in float32.

  Args:
    x: Activations ``[B, H, W, C]`` of any float dtype.

  Returns:
    Float32 features ``[B, C]``.
  """
  return jnp.mean(x.astype(jnp.float32), axis=tuple(range(1, x.ndim - 1)))


def make_conv(dtype: Dtype) -> Callable[..., nn.Conv]:
  """Returns an ``nn.Conv`` constructor with the package-wide conventions.

  Convolutions have no bias (every conv is followed by BatchNorm), use
  torch-style symmetric explicit padding of ``kernel_size // 2``, He fan_out
  initialisation, float32 parameters and ``dtype`` compute.

  Args:
    dtype: Compute dtype.

  Returns:
    A callable ``conv(features, kernel_size, strides=1, name=None)``.
  """

  def conv(features: int, kernel_size: int, strides: int | Sequence[int] = 1,
           name: str | None = None) -> nn.Conv:
    pad = kernel_size // 2
    return nn.Conv(
        features,
        (kernel_size, kernel_size),
        strides=strides,
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        kernel_init=conv_kernel_init,
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )

  return conv


def make_batch_norm(train: bool, dtype: Dtype, axis_name: str | None) -> Callable[..., nn.BatchNorm]:
  """Returns an ``nn.BatchNorm`` constructor with the package-wide conventions.

  Args:
    train: If True, normalise with batch statistics and update running ones.
    dtype: Compute dtype (statistics and parameters stay float32).
    axis_name: Optional mapped axis to average statistics over (shard_map/pmap).

  Returns:
    A ``functools.partial`` of ``nn.BatchNorm``; call it with an optional ``name``.
  """
  return functools.partial(
      nn.BatchNorm,
      use_running_average=not train,
      momentum=BN_MOMENTUM,
      epsilon=BN_EPSILON,
      dtype=dtype,
      param_dtype=jnp.float32,
      axis_name=axis_name,
  )


def classifier_head(features: jnp.ndarray, num_classes: int, dtype: Dtype) -> jnp.ndarray:
  """Applies the final linear layer and casts the logits to float32.

  Must be called from inside a compact module's ``__call__``; the layer is
  named ``head``.

  Args:
    features: Penultimate features ``[B, D]``.
    num_classes: Number of output classes.
    dtype: Compute dtype of the matmul.

  Returns:
    Float32 logits ``[B, num_classes]``.
  """
  logits = nn.Dense(num_classes, dtype=dtype, param_dtype=jnp.float32, name='head')(features)
  return logits.astype(jnp.float32)
