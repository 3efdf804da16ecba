"""CNN architectures (Flax linen) used in the easy/hard-examples study.

Build a network by name::

  from easyhard_jax import models
  model = models.get_model('resnet18', num_classes=10, width=0.25)
  variables = model.init(rng, x, train=False)
  logits = model.apply(variables, x, train=False)
  logits, state = model.apply(variables, x, train=True, mutable=['batch_stats'])
  logits, feats = model.apply(variables, x, train=False, return_features=True)
"""

from easyhard_jax.models.densenet import DenseNetBC
from easyhard_jax.models.plain_cnn import PlainCNN
from easyhard_jax.models.registry import MODEL_REGISTRY, arch_field, available, get_model
from easyhard_jax.models.resnet import RESNET_STAGE_SIZES, BasicBlock, ResNet
from easyhard_jax.models.vgg import VGG_CONFIGS, VGG

__all__ = [
    'BasicBlock',
    'DenseNetBC',
    'MODEL_REGISTRY',
    'PlainCNN',
    'RESNET_STAGE_SIZES',
    'ResNet',
    'VGG',
    'VGG_CONFIGS',
    'arch_field',
    'available',
    'get_model',
]
