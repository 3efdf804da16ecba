"""VGG with BatchNorm, in the CIFAR-style variant.

The convolutional stacks are those of Simonyan & Zisserman (configurations A
and D); each 3x3 conv is followed by BatchNorm and ReLU. As in the common CIFAR
adaptations, the three large fully connected layers are replaced by global
average pooling and a single linear layer. Max-pools are skipped where a
spatial dimension is already 1 pixel, so 8x8 inputs work (they are pooled
three times, 32x32 inputs five times).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from easyhard_jax.models import layers

#: Layer configurations: ints are 3x3 conv output channels, 'M' is a max-pool.
VGG_CONFIGS: dict[str, tuple[int | str, ...]] = {
    'vgg11': (64, 'M', 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'),
    'vgg13': (64, 64, 'M', 128, 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'),
    'vgg16': (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M',
              512, 512, 512, 'M'),
    'vgg19': (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M', 512, 512, 512, 512, 'M',
              512, 512, 512, 512, 'M'),
}


class VGG(nn.Module):
  """VGG-BN network with a global-pool + linear head.

  Attributes:
    num_classes: Number of output classes.
    config: Sequence of conv channel counts and ``'M'`` (max-pool) markers,
      e.g. ``VGG_CONFIGS['vgg16']``.
    width: Multiplier applied to every channel count.
    dtype: Compute dtype; parameters, BN statistics, features and logits are float32.
    bn_axis_name: Optional axis name for cross-device BatchNorm statistics.
  """

  num_classes: int
  config: Sequence[int | str] = VGG_CONFIGS['vgg16']
  width: float = 1.0
  dtype: Any = jnp.float32
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
    n_conv = 0
    for item in self.config:
      if item == 'M':
        x = layers.safe_max_pool(x)
        continue
      x = conv(layers.scale_channels(int(item), self.width), 3, name=f'conv{n_conv}')(x)
      x = nn.relu(norm(name=f'bn{n_conv}')(x))
      n_conv += 1
    feats = layers.global_avg_pool(x)
    logits = layers.classifier_head(feats, self.num_classes, self.dtype)
    return (logits, feats) if return_features else logits
