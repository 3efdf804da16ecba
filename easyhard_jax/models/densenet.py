"""DenseNet-BC for small images (Huang et al., 2017).

The CIFAR form: a 3x3 stem conv with ``2 * growth_rate`` channels, three dense
blocks of ``(depth - 4) // 6`` bottleneck layers each (BN-ReLU-1x1 conv with
``4 * growth_rate`` channels, BN-ReLU-3x3 conv with ``growth_rate`` channels,
concatenated to the input), separated by transitions (BN-ReLU-1x1 conv that
keeps ``floor(compression * C)`` channels, then 2x2 average pooling, skipped
along dims that are already 1 pixel), and a final BN-ReLU, global average pool
and linear head. The width multiplier scales the growth rate (and hence the
stem and bottleneck widths).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from easyhard_jax.models import layers

_NUM_DENSE_BLOCKS = 3


class DenseLayer(nn.Module):
  """Bottleneck dense layer; returns its input concatenated with new features.

  Attributes:
    growth_rate: Channels added by this layer.
    bottleneck_width: Channels of the intermediate 1x1 conv.
    dtype: Compute dtype.
    bn_axis_name: Optional axis name for cross-device BatchNorm statistics.
  """

  growth_rate: int
  bottleneck_width: int
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """Applies the layer.

    Args:
      x: Activations ``[B, H, W, C]``.
      train: If True, use batch statistics and update ``batch_stats``.

    Returns:
      Activations ``[B, H, W, C + growth_rate]``.
    """
    conv = layers.make_conv(self.dtype)
    norm = layers.make_batch_norm(train, self.dtype, self.bn_axis_name)
    y = nn.relu(norm(name='bn1')(x))
    y = conv(self.bottleneck_width, 1, name='conv1')(y)
    y = nn.relu(norm(name='bn2')(y))
    y = conv(self.growth_rate, 3, name='conv2')(y)
    return jnp.concatenate([x, y], axis=-1)


class Transition(nn.Module):
  """BN-ReLU-1x1 conv compression followed by 2x2 average pooling.

  Attributes:
    features: Output channels.
    dtype: Compute dtype.
    bn_axis_name: Optional axis name for cross-device BatchNorm statistics.
  """

  features: int
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """Applies the transition.

    Args:
      x: Activations ``[B, H, W, C]``.
      train: If True, use batch statistics and update ``batch_stats``.

    Returns:
      Activations ``[B, H', W', features]`` (spatially halved where possible).
    """
    conv = layers.make_conv(self.dtype)
    norm = layers.make_batch_norm(train, self.dtype, self.bn_axis_name)
    x = nn.relu(norm(name='bn')(x))
    x = conv(self.features, 1, name='conv')(x)
    return layers.safe_avg_pool(x)


class DenseNetBC(nn.Module):
  """DenseNet-BC for small images.

  Attributes:
    num_classes: Number of output classes.
    depth: Total depth; ``(depth - 4)`` must be a positive multiple of 6.
    growth_rate: Base (width 1.0) growth rate k.
    compression: Fraction of channels kept by each transition, in (0, 1].
    bottleneck_factor: The 1x1 bottleneck conv has ``bottleneck_factor * k`` channels.
    width: Multiplier applied to the growth rate (and so to every channel count).
    dtype: Compute dtype; parameters, BN statistics, features and logits are float32.
    bn_axis_name: Optional axis name for cross-device BatchNorm statistics.
  """

  num_classes: int
  depth: int = 100
  growth_rate: int = 12
  compression: float = 0.5
  bottleneck_factor: int = 4
  width: float = 1.0
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None

  def _check_config(self) -> int:
    """Validates the hyper-parameters and returns the layers per dense block."""
    if self.depth < 10 or (self.depth - 4) % 6 != 0:
      raise ValueError(
          f'DenseNet-BC depth must satisfy (depth - 4) % 6 == 0 and depth >= 10 '
          f'(e.g. 22, 40, 100, 190); got depth={self.depth}.')
    if self.growth_rate < 1:
      raise ValueError(f'growth_rate must be >= 1; got {self.growth_rate}.')
    if not 0 < self.compression <= 1:
      raise ValueError(f'compression must be in (0, 1]; got {self.compression}.')
    return (self.depth - 4) // 6

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False, return_features: bool = False):
    """Runs the network.

    Args:
      x: Images ``[B, H, W, C]`` (any H, W >= 1 and any C).
      train: If True, use batch statistics and update ``batch_stats``.
      return_features: If True, also return the penultimate features.

    Returns:
      Float32 logits ``[B, num_classes]``, or ``(logits, features)`` with
      float32 features ``[B, D]`` if ``return_features``.
    """
    layers_per_block = self._check_config()
    growth = layers.scale_channels(self.growth_rate, self.width)
    conv = layers.make_conv(self.dtype)
    norm = layers.make_batch_norm(train, self.dtype, self.bn_axis_name)

    x = x.astype(self.dtype)
    x = conv(2 * growth, 3, name='stem_conv')(x)
    for b in range(_NUM_DENSE_BLOCKS):
      for i in range(layers_per_block):
        x = DenseLayer(growth, self.bottleneck_factor * growth, dtype=self.dtype,
                       bn_axis_name=self.bn_axis_name, name=f'block{b + 1}_layer{i}')(x, train=train)
      if b < _NUM_DENSE_BLOCKS - 1:
        out = max(1, int(math.floor(self.compression * x.shape[-1])))
        x = Transition(out, dtype=self.dtype, bn_axis_name=self.bn_axis_name,
                       name=f'transition{b + 1}')(x, train=train)
    x = nn.relu(norm(name='final_bn')(x))
    feats = layers.global_avg_pool(x)
    logits = layers.classifier_head(feats, self.num_classes, self.dtype)
    return (logits, feats) if return_features else logits
