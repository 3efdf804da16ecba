"""A small plain CNN: conv-BN-ReLU stages with max-pooling, then a linear head.

Meant as the cheap baseline architecture of the study (and for fast CPU tests):
each stage is ``convs_per_stage`` 3x3 conv-BN-ReLU layers followed by a 2x2
max-pool (skipped where a spatial dim is already 1 pixel), then global average
pooling and a dense classifier.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from easyhard_jax.models import layers


class PlainCNN(nn.Module):
  """Plain convolutional network.

  Attributes:
    num_classes: Number of output classes.
    width: Multiplier applied to every channel count.
    dtype: Compute dtype; parameters, BN statistics, features and logits are float32.
    channels: Base (width 1.0) channel count of each stage.
    convs_per_stage: Number of conv-BN-ReLU layers before each max-pool.
    bn_axis_name: Optional axis name for cross-device BatchNorm statistics.
  """

  num_classes: int
  width: float = 1.0
  dtype: Any = jnp.float32
  channels: Sequence[int] = (32, 64, 128)
  convs_per_stage: int = 1
  bn_axis_name: str | None = None

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
    conv = layers.make_conv(self.dtype)
    norm = layers.make_batch_norm(train, self.dtype, self.bn_axis_name)
    x = x.astype(self.dtype)
    for i, base in enumerate(self.channels):
      features = layers.scale_channels(base, self.width)
      for j in range(self.convs_per_stage):
        x = conv(features, 3, name=f'conv{i}_{j}')(x)
        x = nn.relu(norm(name=f'bn{i}_{j}')(x))
      x = layers.safe_max_pool(x)
    feats = layers.global_avg_pool(x)
    logits = layers.classifier_head(feats, self.num_classes, self.dtype)
    return (logits, feats) if return_features else logits
