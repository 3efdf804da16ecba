"""Tests for easyhard_jax.models: shapes, dtypes, BatchNorm state, widths, errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from easyhard_jax import models

ALL_MODELS = ('cnn', 'densenet_bc', 'resnet18', 'resnet34', 'vgg11', 'vgg16')
# Smallest DenseNet-BC (one bottleneck layer per block) keeps compile times low;
# the default depth-100 structure is checked by test_known_parameter_counts_at_width_one.
FAST_KWARGS = {'densenet_bc': {'depth': 10}}
NUM_CLASSES = 5


def _fast_model(name, width=0.25, **kwargs):
  return models.get_model(name, num_classes=NUM_CLASSES, width=width,
                          **{**FAST_KWARGS.get(name, {}), **kwargs})


def _count(tree):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


def _abstract_init(model, shape):
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  return jax.eval_shape(functools.partial(model.init, train=False), jax.random.PRNGKey(0), x)


def _inputs(shape, seed=1):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _numpy_variables(model, shape, seed=0):
  """Variables with init's structure and statistics, drawn with numpy.

  Compiling JAX's (partitionable threefry) random kernels costs seconds per
  parameter shape on CPU, so most tests skip ``model.init``'s sampling;
  ``test_init_is_kaiming_fan_out`` covers the real initialiser.
  """
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name in ('var', 'scale'):
      return jnp.ones(leaf.shape, leaf.dtype)
    if name in ('mean', 'bias'):
      return jnp.zeros(leaf.shape, leaf.dtype)
    fan = leaf.shape[0] if len(leaf.shape) == 2 else np.prod(leaf.shape[:-2]) * leaf.shape[-1]
    return jnp.asarray(rng.normal(size=leaf.shape) * np.sqrt(2.0 / fan), leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, _abstract_init(model, shape))


def test_available_is_sorted_and_complete():
  assert models.available() == tuple(sorted(ALL_MODELS + ('resnet50',)))
  assert all(name in models.MODEL_REGISTRY for name in ALL_MODELS)


@pytest.mark.slow
@pytest.mark.parametrize('name', ALL_MODELS)
@pytest.mark.parametrize('shape', [(3, 8, 8, 1), (2, 32, 32, 3)], ids=['8x8x1', '32x32x3'])
def test_forward_train_and_eval(name, shape):
  model = _fast_model(name)
  x = _inputs(shape)
  variables = _numpy_variables(model, shape)
  assert set(variables) == {'params', 'batch_stats'}

  # Eager (not jitted): primitives compiled once are reused across models.
  (logits, feats), eval_state = model.apply(variables, x, train=False, return_features=True,
                                            mutable=['batch_stats'])
  (t_logits, t_feats), train_state = model.apply(variables, x, train=True, return_features=True,
                                                 mutable=['batch_stats'])
  plain = model.apply(variables, x, train=False)

  kernel = variables['params']['head']['kernel']
  assert logits.shape == (shape[0], NUM_CLASSES) and logits.dtype == jnp.float32
  assert t_logits.shape == (shape[0], NUM_CLASSES) and t_logits.dtype == jnp.float32
  assert feats.shape == (shape[0], kernel.shape[0]) and feats.dtype == jnp.float32
  assert t_feats.shape == feats.shape
  assert np.all(np.isfinite(logits)) and np.all(np.isfinite(t_logits))
  np.testing.assert_allclose(plain, logits, rtol=1e-5, atol=1e-5)
  # The features really are the head's input.
  np.testing.assert_allclose(feats @ kernel + variables['params']['head']['bias'], logits,
                             rtol=1e-4, atol=1e-4)
  # Eval mode leaves the running statistics alone; train mode updates every one.
  jax.tree_util.tree_map(np.testing.assert_array_equal, eval_state['batch_stats'],
                         variables['batch_stats'])
  changed = jax.tree_util.tree_map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                                   train_state['batch_stats'], variables['batch_stats'])
  assert all(jax.tree_util.tree_leaves(changed))
  # Batch statistics vs. (freshly initialised) running statistics give different outputs.
  assert not np.allclose(t_logits, logits)


@functools.cache
def _reference_shapes(name):
  variables = _abstract_init(_fast_model(name), (2, 32, 32, 3))
  return jax.tree_util.tree_map(lambda s: s.shape, variables)


@pytest.mark.parametrize('name', ALL_MODELS)
@pytest.mark.parametrize('hw', [(1, 1), (7, 5), (28, 28), (224, 224)])
def test_any_input_size_and_structure_is_size_independent(name, hw):
  model = _fast_model(name)
  variables = _abstract_init(model, (2, *hw, 3))
  # Same parameter tree whatever the input size, so checkpoints are interchangeable.
  assert jax.tree_util.tree_map(lambda s: s.shape, variables) == _reference_shapes(name)
  x = jax.ShapeDtypeStruct((2, *hw, 3), jnp.float32)
  logits, feats = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=False, return_features=True), variables, x)
  assert logits.shape == (2, NUM_CLASSES) and logits.dtype == jnp.float32
  assert feats.shape == (2, variables['params']['head']['kernel'].shape[0])


def test_known_parameter_counts_at_width_one():
  shape = (1, 32, 32, 3)
  resnet18 = models.get_model('resnet18', num_classes=10)
  n = _count(_abstract_init(resnet18, shape)['params'])
  assert abs(n - 11_173_962) / 11_173_962 < 0.02  # CIFAR ResNet-18
  # Default DenseNet-BC (depth 100, k=12) is the paper's 0.8M model.
  densenet = models.get_model('densenet_bc', num_classes=10)
  assert densenet.depth == 100 and densenet.growth_rate == 12
  n = _count(_abstract_init(densenet, shape)['params'])
  assert abs(n - 769_162) / 769_162 < 0.02


@pytest.mark.parametrize('name,expected', [('resnet18', 11_689_512),
                                           ('resnet50', 25_557_032)])
def test_imagenet_resnets_match_torchvision_parameter_counts(name, expected):
  model = models.get_model(name, num_classes=1000, stem='imagenet')
  assert _count(_abstract_init(model, (1, 224, 224, 3))['params']) == expected


@pytest.mark.slow
def test_resnet50_imagenet_form_runs_and_expands_features():
  model = _fast_model('resnet50', stem='imagenet')
  x = _inputs((2, 32, 32, 3))
  variables = _numpy_variables(model, x.shape)
  logits, feats = model.apply(variables, x, train=False, return_features=True)
  assert logits.shape == (2, NUM_CLASSES)
  assert feats.shape == (2, 4 * 128)  # Last stage: 512 * 0.25, 4x expanded.
  with pytest.raises(ValueError, match='stem'):
    _fast_model('resnet18', stem='huge').init(jax.random.key(0), x)


@pytest.mark.parametrize('name', ALL_MODELS)
def test_width_multiplier_scales_parameters_quadratically(name):
  shape = (1, 32, 32, 3)
  small = _count(_abstract_init(_fast_model(name, width=0.25), shape)['params'])
  large = _count(_abstract_init(_fast_model(name, width=0.5), shape)['params'])
  assert 3.0 < large / small < 4.5, (small, large)


def test_width_scales_channels():
  variables = _abstract_init(models.get_model('resnet18', num_classes=10, width=0.25),
                             (1, 8, 8, 1))
  params = variables['params']
  assert params['stem_conv']['kernel'].shape == (3, 3, 1, 16)
  assert params['stage4_block1']['conv2']['kernel'].shape[-1] == 128
  assert params['head']['kernel'].shape == (128, 10)
  dense = _abstract_init(models.get_model('densenet_bc', num_classes=10, width=0.5, depth=16),
                         (1, 8, 8, 3))['params']
  assert dense['stem_conv']['kernel'].shape[-1] == 12  # 2 * round(12 * 0.5)
  assert dense['block1_layer0']['conv2']['kernel'].shape[-1] == 6
  assert dense['block1_layer0']['conv1']['kernel'].shape[-1] == 24


def test_tiny_width_rounds_to_at_least_one_channel():
  model = models.get_model('vgg11', num_classes=3, width=1e-3)
  x = jax.ShapeDtypeStruct((2, 8, 8, 1), jnp.float32)
  variables = _abstract_init(model, x.shape)
  assert variables['params']['conv7']['kernel'].shape == (3, 3, 1, 1)
  logits, feats = jax.eval_shape(lambda v, x: model.apply(v, x, return_features=True),
                                 variables, x)
  assert feats.shape == (2, 1) and logits.shape == (2, 3)


def test_init_is_kaiming_fan_out():
  model = models.get_model('cnn', num_classes=4, width=1.0, channels=(8, 64))
  x = jnp.ones((2, 8, 8, 1))
  # The non-partitionable threefry only makes the sampling kernels compile fast.
  with jax.threefry_partitionable(False):
    variables = jax.jit(functools.partial(model.init, train=False))(jax.random.PRNGKey(0), x)
  kernel = np.asarray(variables['params']['conv1_0']['kernel'])
  assert kernel.shape == (3, 3, 8, 64)
  expected_std = np.sqrt(2.0 / (3 * 3 * 64))
  assert abs(kernel.std() / expected_std - 1) < 0.1
  assert abs(kernel.mean()) < 0.1 * expected_std
  for leaf in jax.tree_util.tree_leaves(variables['batch_stats']['bn1_0']):
    assert leaf.shape == (64,) and leaf.dtype == jnp.float32
  np.testing.assert_array_equal(variables['batch_stats']['bn1_0']['var'], 1.0)
  logits = model.apply(variables, x, train=False)
  assert logits.shape == (2, 4)


def test_bfloat16_compute_keeps_float32_params_stats_and_outputs():
  shape = (3, 8, 8, 1)  # As in test_forward_train_and_eval, to reuse compiled float32 ops.
  x = _inputs(shape)
  model = _fast_model('cnn', dtype=jnp.bfloat16)
  for leaf in jax.tree_util.tree_leaves(_abstract_init(model, shape)):
    assert leaf.dtype == jnp.float32
  variables = _numpy_variables(model, shape)
  apply = jax.jit(functools.partial(model.apply, train=True, return_features=True,
                                    mutable=['batch_stats']))
  (logits, feats), state = apply(variables, x)
  assert logits.dtype == jnp.float32 and feats.dtype == jnp.float32
  assert np.all(np.isfinite(logits))
  for leaf in jax.tree_util.tree_leaves(state):
    assert leaf.dtype == jnp.float32


def test_bfloat16_resnet_approximates_float32():
  shape = (3, 8, 8, 1)
  x = _inputs(shape)
  model16 = _fast_model('resnet18', dtype=jnp.bfloat16)
  model32 = _fast_model('resnet18')
  variables = _numpy_variables(model32, shape)

  # Eval mode: train-mode BN over 3 samples at 1x1 resolution is too ill-conditioned
  # to compare precisions.
  @jax.jit
  def run(variables, x):
    return (model16.apply(variables, x, train=False, return_features=True),
            model32.apply(variables, x, train=False))

  (logits, feats), logits32 = run(variables, x)
  assert logits.dtype == jnp.float32 and feats.dtype == jnp.float32
  assert not np.array_equal(logits, logits32)  # bfloat16 compute really happened.
  np.testing.assert_allclose(logits, logits32, atol=0.05 * float(np.abs(logits32).max()))


def test_errors_name_the_fix():
  with pytest.raises(ValueError, match=r"Unknown model 'resnet101'.*resnet18"):
    models.get_model('resnet101', num_classes=10)
  for width in (0, -0.5):
    with pytest.raises(ValueError, match='width must be'):
      models.get_model('cnn', num_classes=10, width=width)
  for num_classes in (1, 0):
    with pytest.raises(ValueError, match='num_classes must be an integer >= 2'):
      models.get_model('cnn', num_classes=num_classes)
  with pytest.raises(TypeError, match='growth_rate'):
    models.get_model('resnet18', num_classes=10, growth_rate=12)
  model = models.get_model('densenet_bc', num_classes=10, depth=23)
  with pytest.raises(ValueError, match='depth'):
    _abstract_init(model, (1, 8, 8, 3))


def test_bn_axis_name_syncs_statistics_across_shards():
  model = _fast_model('cnn', bn_axis_name='data')
  reference = _fast_model('cnn')
  x = _inputs((8, 8, 8, 1)) * 3.0 + 1.0
  variables = _numpy_variables(reference, x.shape)

  def sharded(x_shard):
    return model.apply(variables, x_shard, train=True, mutable=['batch_stats'])

  @jax.jit
  def run(x):
    synced = jax.vmap(sharded, axis_name='data')(x.reshape(2, 4, *x.shape[1:]))
    return synced, reference.apply(variables, x, train=True, mutable=['batch_stats'])

  (logits, state), (ref_logits, ref_state) = run(x)
  # Synchronised BN over two half-batches equals BN over the full batch.
  np.testing.assert_allclose(logits.reshape(ref_logits.shape), ref_logits, rtol=1e-4, atol=1e-4)
  jax.tree_util.tree_map(
      lambda s, r: np.testing.assert_allclose(s[0], r, rtol=1e-4, atol=1e-5), state, ref_state)


def test_cnn_trains_on_a_fixed_batch():
  model = models.get_model('cnn', num_classes=4, width=0.5)
  x = _inputs((32, 8, 8, 1))
  y = jnp.asarray(np.random.default_rng(2).integers(0, 4, size=32))
  variables = _numpy_variables(model, x.shape)
  params, batch_stats = variables['params'], variables['batch_stats']
  tx = optax.sgd(0.1, momentum=0.9)
  opt_state = tx.init(params)

  def loss_fn(params, batch_stats):
    logits, state = model.apply({'params': params, 'batch_stats': batch_stats}, x, train=True,
                                mutable=['batch_stats'])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, state['batch_stats']

  @jax.jit
  def step(params, batch_stats, opt_state):
    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch_stats)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, loss

  losses = []
  for _ in range(30):
    params, batch_stats, opt_state, loss = step(params, batch_stats, opt_state)
    losses.append(float(loss))
  assert np.isfinite(losses).all()
  assert losses[-1] < 0.5 * losses[0], losses
