"""Validation of study configs, and the backend-dependent defaults.

Every check raises a ValueError that names the field and what to set instead,
before any data is loaded or anything is compiled.
"""

from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp

from easyhard_jax import config_fields
from easyhard_jax import models
from easyhard_jax.train import steps as steps_lib

_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def compute_dtype(config):
  """Compute dtype: 'auto' is float32 on CPU and bfloat16 on GPU/TPU."""
  name = config.get('dtype', 'auto')
  if name == 'auto':
    return jnp.float32 if jax.default_backend() == 'cpu' else jnp.bfloat16
  if name not in _DTYPES:
    raise ValueError(f"dtype must be 'auto', 'float32' or 'bfloat16', got "
                     f'{name!r}.')
  return _DTYPES[name]


def member_strategy(config) -> str:
  """'auto' picks by backend: unroll on CPU (measured, README), vmap elsewhere.

  On XLA:CPU vmapped convolutions lower to grouped convolutions, which ran at
  0.3x per-member throughput against 1.25x for the unrolled loop (benchmark).
  The GPU choice has not been measured yet; rerun the benchmark there.
  """
  name = config.get('member_strategy', 'auto')
  if name == 'auto':
    return 'unroll' if jax.default_backend() == 'cpu' else 'vmap'
  if name not in steps_lib.STRATEGIES:
    raise ValueError(f'member_strategy must be auto or one of '
                     f'{steps_lib.STRATEGIES}, got {name!r}.')
  return name


def validate(config) -> None:
  """Raises ValueError naming the field for any impossible config value."""
  archs = config_fields.arch_list(config)
  if not archs:
    raise ValueError('config.archs is empty; list model names, e.g. '
                     f"'cnn,resnet18' (available: {models.available()}).")
  unknown = [a for a in archs if a not in models.available()]
  if unknown:
    raise ValueError(f'Unknown architecture(s) {unknown} in config.archs; '
                     f'available: {", ".join(models.available())}.')
  if len(set(archs)) != len(archs):
    raise ValueError(f'config.archs lists an architecture twice: {archs}.')
  for field in ('seeds_per_arch', 'epochs', 'batch_size', 'eval_batch_size',
                'checkpoint_every_epochs', 'checkpoints_to_keep'):
    config_fields.at_least(config, field, required=True)
  if not config.width > 0:
    raise ValueError(f'config.width must be > 0, got {config.width}.')
  if not config.optimizer.learning_rate > 0:
    raise ValueError('config.optimizer.learning_rate must be > 0.')
  if not config.optimizer.get('grad_clip_norm', 0) >= 0:
    raise ValueError('config.optimizer.grad_clip_norm must be >= 0 (0 = off),'
                     f' got {config.optimizer.grad_clip_norm}.')
  if not isinstance(config.get('max_train_examples', 0), int) or (
      config.get('max_train_examples', 0) < 0):
    raise ValueError('config.max_train_examples must be an integer >= 0 '
                     f'(0 = all), got {config.max_train_examples!r}.')
  if config.augment.crop_padding < 0:
    raise ValueError('config.augment.crop_padding must be >= 0.')
  compute_dtype(config)
  _validate_stream(config)
  from easyhard_jax.train import mesh as mesh_lib
  mesh_lib.mesh_shape(config, config.seeds_per_arch, member_strategy(config))
  from easyhard_jax.train import optim
  from easyhard_jax.train import probe_schedule
  probe_schedule.probe_schedule(config, steps_per_epoch=4)
  probe_schedule.analysis_checkpoint_steps(config, steps_per_epoch=4)
  optim.Optimizer.from_config(config)  # Names the bad optimizer field.


# No registered model at width 1 has more parameters than this (vgg16:
# 14.7M); a config under this bound needs no exact count (which costs up to
# 2 s of tracing per architecture).
_PARAMS_BOUND = 50_000_000
# Float32 copies of the parameters per member during training: parameters,
# gradients, the update, and the optimizer's moments (one for SGD, two for
# Adam). Activations come on top: the estimate is a lower bound.
_COPIES = {'sgd': 4, 'adam': 5}


@functools.lru_cache(maxsize=32)
def _param_count(arch: str, width: float, num_classes: int, image_size: int,
                 kwargs_json: str) -> int:
  model = models.get_model(arch, num_classes=num_classes, width=width,
                           **json.loads(kwargs_json))
  shapes = jax.eval_shape(
      lambda k: model.init(k, jnp.zeros((1, image_size, image_size, 3)),
                           train=False), jax.random.key(0))
  return int(sum(x.size for x in jax.tree.leaves(shapes['params'])))


def memory_bytes() -> tuple[int, str]:
  """(bytes the members of one architecture can use, what they are)."""
  devices = jax.local_devices()
  if devices[0].platform != 'cpu':
    stats = [d.memory_stats() or {} for d in devices]
    total = sum(int(s.get('bytes_limit', 0)) for s in stats)
    if total:
      return total, f'{len(devices)} {devices[0].platform} device(s)'
  return (os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES'),
          'host memory')


def check_memory(config) -> None:
  """Refuses ``seeds_per_arch`` whose members cannot fit in memory.

  An estimate from the parameter count alone (parameters, gradients,
  update and optimizer moments per member, float32), so a refusal is
  certain; a config that passes may still run out of memory on activations.
  """
  members = config.seeds_per_arch
  copies = _COPIES.get(config.optimizer.name, 5) * 4
  available, where = memory_bytes()
  bound = members * _PARAMS_BOUND * max(config.width, 1.0)**2 * copies
  if bound < available:
    return
  for arch in config_fields.arch_list(config):
    kwargs = json.dumps(dict(config.model_kwargs.get(arch, {})),
                        sort_keys=True)
    params = _param_count(arch, float(config.width),
                          int(config.get('num_classes') or 10),
                          int(config.get('image_size') or 32), kwargs)
    need = members * params * copies
    if need > available:
      raise ValueError(
          f'config.seeds_per_arch={members}: {members} {arch} members need '
          f'at least {need / 2**30:.1f} GiB ({params:,} parameters each, '
          f'times {copies // 4} float32 copies for gradients and optimizer '
          f'state), more than the {available / 2**30:.1f} GiB of {where}. '
          'Lower seeds_per_arch or width.')


def _validate_stream(config) -> None:
  """The streamed-data fields (see data/streaming.py)."""
  stream = config.get('stream')
  if stream is None or not stream.enabled:
    return
  for field in ('stream.num_threads', 'stream.prefetch_batches',
                'stream.stats_examples'):
    config_fields.at_least(config, field, required=True)
  if not 0 < stream.crop_fraction <= 1:
    raise ValueError('config.stream.crop_fraction must be in (0, 1], got '
                     f'{stream.crop_fraction}.')
  if stream.random_resized_crop and not config.get('image_size'):
    raise ValueError('config.stream.random_resized_crop needs '
                     'config.image_size (the crop is resized to it), e.g. 224.')
