"""Name -> constructor registry for the CNN architectures.

``get_model`` is the single entry point the rest of the package uses to build
a network from a config string; see :data:`MODEL_REGISTRY` for the names.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from easyhard_jax.models.densenet import DenseNetBC
from easyhard_jax.models.plain_cnn import PlainCNN
from easyhard_jax.models.resnet import RESNET_STAGE_SIZES, ResNet
from easyhard_jax.models.vgg import VGG_CONFIGS, VGG

#: Registered architectures. Each constructor accepts ``num_classes``,
#: ``width``, ``dtype`` and ``bn_axis_name`` plus model-specific keywords.
MODEL_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    'cnn': PlainCNN,
    'vgg11': functools.partial(VGG, config=VGG_CONFIGS['vgg11']),
    'vgg16': functools.partial(VGG, config=VGG_CONFIGS['vgg16']),
    'resnet18': functools.partial(ResNet, stage_sizes=RESNET_STAGE_SIZES['resnet18']),
    'resnet34': functools.partial(ResNet, stage_sizes=RESNET_STAGE_SIZES['resnet34']),
    'resnet50': functools.partial(ResNet, stage_sizes=RESNET_STAGE_SIZES['resnet50'],
                                  block='bottleneck'),
    'densenet_bc': DenseNetBC,
}


def available() -> tuple[str, ...]:
  """Lists the registered model names.

  Returns:
    The names accepted by :func:`get_model`, sorted.
  """
  return tuple(sorted(MODEL_REGISTRY))


def arch_field(config, field: str) -> list[str]:
  """The names in an architecture list field, each checked to be registered.

  ``field`` is dotted (``'removal.archs'``): 'study' (= ``config.archs``) or
  comma-separated model names. Raises ValueError naming the field, the bad
  value and the registered names (the names become file names on disk).
  """
  from easyhard_jax import config_fields  # pylint: disable=g-import-not-at-top
  names = config_fields.arch_list(config, field)
  unknown = [a for a in names if a not in MODEL_REGISTRY]
  if unknown or not names:
    raise ValueError(
        f'config.{field} must be \'study\' or comma-separated model names '
        f'(available: {", ".join(available())}); got '
        f'{config_fields.get(config, field)!r}.')
  return names


def _module_class(constructor: Callable[..., nn.Module]) -> type:
  return constructor.func if isinstance(constructor, functools.partial) else constructor


def get_model(name: str, *, num_classes: int, width: float = 1.0,
              dtype: Any = jnp.float32, **kwargs: Any) -> nn.Module:
  """Builds a registered model.

  Args:
    name: Registered model name (see :func:`available`).
    num_classes: Number of output classes (>= 2).
    width: Positive multiplier applied to every channel count.
    dtype: Compute dtype, e.g. ``jnp.bfloat16``; parameters, BN statistics,
      logits and features stay float32.
    **kwargs: Model-specific attributes, e.g. ``depth`` and ``growth_rate`` for
      ``'densenet_bc'`` or ``bn_axis_name`` for any model.

  Returns:
    An unbound ``flax.linen.Module``; call ``init(rng, x, train=False)`` and
    ``apply(variables, x, train=..., return_features=...)`` on NHWC inputs.

  Raises:
    ValueError: For an unknown name, ``num_classes < 2`` or ``width <= 0``.
    TypeError: For a keyword the chosen model does not accept.
  """
  if name not in MODEL_REGISTRY:
    raise ValueError(f'Unknown model {name!r}; available models: {", ".join(available())}.')
  if (isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral)
      or num_classes < 2):
    raise ValueError(f'num_classes must be an integer >= 2; got {num_classes!r}.')
  if (isinstance(width, bool) or not isinstance(width, numbers.Real) or not width > 0
      or not math.isfinite(width)):
    raise ValueError(f'width must be a finite number > 0 (e.g. 1.0, or 0.25 for fast CPU runs); '
                     f'got {width!r}.')
  constructor = MODEL_REGISTRY[name]
  accepted = {f.name for f in dataclasses.fields(_module_class(constructor))} - {'parent', 'name'}
  unknown = sorted(set(kwargs) - accepted)
  if unknown:
    raise TypeError(f'Model {name!r} got unexpected keyword(s) {unknown}; '
                    f'it accepts: {", ".join(sorted(accepted))}.')
  return constructor(num_classes=int(num_classes), width=float(width), dtype=dtype, **kwargs)
