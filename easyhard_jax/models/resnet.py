"""ResNets: basic blocks (ResNet-18/34) and bottlenecks (ResNet-50).

Standard (post-activation) residual networks of He et al. (2016) in the CIFAR
form popularised by torchvision-derived CIFAR code: the stem is a single 3x3
stride-1 conv-BN-ReLU with no max-pool, followed by four stages of basic
blocks (base widths 64, 128, 256, 512); stages 2-4 halve the resolution with a
stride-2 first block and a 1x1 conv-BN projection shortcut. A stride is dropped
along any spatial dim that is already 1 pixel. ``stem='imagenet'`` gives the
ImageNet form instead (7x7 stride-2 conv-BN-ReLU and a 3x3 stride-2 max-pool),
and ``block='bottleneck'`` the 1x1-3x3-1x1 blocks of ResNet-50 (4x expansion).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from easyhard_jax.models import layers

#: Blocks per stage for the basic-block ResNets.
RESNET_STAGE_SIZES: dict[str, tuple[int, ...]] = {
    'resnet18': (2, 2, 2, 2),
    'resnet34': (3, 4, 6, 3),
    'resnet50': (3, 4, 6, 3),
}


class BasicBlock(nn.Module):
  """Two 3x3 conv-BN layers with an identity or projection shortcut.

  Attributes:
    features: Output channels.
    downsample: Whether this block nominally halves the resolution. It decides
      the parameter structure (a projection shortcut), independent of the input
      size; the actual stride is 1 along dims that are already 1 pixel.
    dtype: Compute dtype.
    bn_axis_name: Optional axis name for cross-device BatchNorm statistics.
  """

  features: int
  downsample: bool = False
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """Applies the block.

    Args:
      x: Activations ``[B, H, W, C]``.
      train: If True, use batch statistics and update ``batch_stats``.

    Returns:
      Activations ``[B, H', W', features]``.
    """
    conv = layers.make_conv(self.dtype)
    norm = layers.make_batch_norm(train, self.dtype, self.bn_axis_name)
    strides = layers.downsample_factors(x.shape[1:-1]) if self.downsample else 1
    y = conv(self.features, 3, strides, name='conv1')(x)
    y = nn.relu(norm(name='bn1')(y))
    y = conv(self.features, 3, name='conv2')(y)
    y = norm(name='bn2')(y)
    shortcut = x
    if self.downsample or x.shape[-1] != self.features:
      shortcut = conv(self.features, 1, strides, name='proj_conv')(x)
      shortcut = norm(name='proj_bn')(shortcut)
    return nn.relu(y + shortcut)


class BottleneckBlock(BasicBlock):
  """1x1 reduce, 3x3 (strided), 1x1 expand (4x), with a projection shortcut.

  Attributes: BasicBlock's; ``features`` is the bottleneck width, the block
  outputs ``4 * features`` channels. The last BN of each block starts at zero
  (as in Goyal et al. 2017) so a deep ResNet starts close to shallow.
  """

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """Applies the block to ``[B, H, W, C]`` activations."""
    conv = layers.make_conv(self.dtype)
    norm = layers.make_batch_norm(train, self.dtype, self.bn_axis_name)
    strides = layers.downsample_factors(x.shape[1:-1]) if self.downsample else 1
    y = nn.relu(norm(name='bn1')(conv(self.features, 1, name='conv1')(x)))
    y = nn.relu(norm(name='bn2')(conv(self.features, 3, strides,
                                      name='conv2')(y)))
    y = conv(4 * self.features, 1, name='conv3')(y)
    y = norm(name='bn3', scale_init=nn.initializers.zeros)(y)
    shortcut = x
    if self.downsample or x.shape[-1] != 4 * self.features:
      shortcut = conv(4 * self.features, 1, strides, name='proj_conv')(x)
      shortcut = norm(name='proj_bn')(shortcut)
    return nn.relu(y + shortcut)


class ResNet(nn.Module):
  """Basic-block ResNet for small images.

  Attributes:
    num_classes: Number of output classes.
    stage_sizes: Number of basic blocks in each stage.
    stage_widths: Base (width 1.0) channels of each stage; the stem uses the first.
    width: Multiplier applied to every channel count.
    dtype: Compute dtype; parameters, BN statistics, features and logits are float32.
    bn_axis_name: Optional axis name for cross-device BatchNorm statistics.
  """

  num_classes: int
  stage_sizes: Sequence[int] = RESNET_STAGE_SIZES['resnet18']
  stage_widths: Sequence[int] = (64, 128, 256, 512)
  width: float = 1.0
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None
  stem: str = 'small'
  block: str = 'basic'

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
    if len(self.stage_sizes) != len(self.stage_widths):
      raise ValueError(
          f'stage_sizes {tuple(self.stage_sizes)} and stage_widths '
          f'{tuple(self.stage_widths)} must have the same length.')
    if self.stem not in ('small', 'imagenet') or self.block not in (
        'basic', 'bottleneck'):
      raise ValueError(f"stem must be 'small' or 'imagenet' and block 'basic' "
                       f"or 'bottleneck'; got {self.stem!r}, {self.block!r}.")
    conv = layers.make_conv(self.dtype)
    norm = layers.make_batch_norm(train, self.dtype, self.bn_axis_name)
    x = x.astype(self.dtype)
    stem_width = layers.scale_channels(self.stage_widths[0], self.width)
    if self.stem == 'imagenet':
      x = conv(stem_width, 7, layers.downsample_factors(x.shape[1:-1]),
               name='stem_conv')(x)
      x = nn.relu(norm(name='stem_bn')(x))
      window = tuple(min(3, d) for d in x.shape[1:-1])
      x = nn.max_pool(x, window, layers.downsample_factors(x.shape[1:-1]),
                      padding='SAME')
    else:
      x = conv(stem_width, 3, name='stem_conv')(x)
      x = nn.relu(norm(name='stem_bn')(x))
    block_cls = BasicBlock if self.block == 'basic' else BottleneckBlock
    for i, (n_blocks, base) in enumerate(zip(self.stage_sizes, self.stage_widths)):
      for j in range(n_blocks):
        x = block_cls(
            layers.scale_channels(base, self.width),
            downsample=(i > 0 and j == 0),
            dtype=self.dtype,
            bn_axis_name=self.bn_axis_name,
            name=f'stage{i + 1}_block{j}',
        )(x, train=train)
    feats = layers.global_avg_pool(x)
    logits = layers.classifier_head(feats, self.num_classes, self.dtype)
    return (logits, feats) if return_features else logits
