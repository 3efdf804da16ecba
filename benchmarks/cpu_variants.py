"""XLA:CPU formulations of the ResNet-18 train step, side by side.

  taskset -c 1 python -m benchmarks.cpu_variants                # time them
  taskset -c 1 python -m benchmarks.cpu_variants --accuracy     # vs float64

Each variant computes the project's ResNet-18 (width 1/4 by default) train
step (forward in train mode, per-example cross-entropy, gradients, BatchNorm
running statistics, SGD update) with the project's own variables, written
another way: NCHW instead of NHWC, 1x1 convolutions as einsums, 3x3 ones as
im2col + matmul, output channels padded so that XLA hands the convolution to
YNNPACK, filter gradients as one matmul, BatchNorm as one fused affine map or
with a closed-form gradient. Steps alternate round by round in one process, so
other load hits every variant alike; the table gives the median per-round
ratio project / variant (> 1: the variant is faster) in wall and CPU time.

What the profile behind these variants shows (jax 0.10.2, 1 core): XLA:CPU
sends a convolution to YNNPACK only in NHWC/HWIO layout, with more than 16
input or output channels and no input dilation; the 16-channel first stage,
the stem and the input gradients of stride-2 convolutions run on Eigen at
about half YNNPACK's rate, and filter gradients need their operands
transposed to batch-last (about 15% of the step).

``--accuracy`` compares each variant's gradients, in float32, with a float64
run of the project's formulation: a variant has to be as accurate as the
project (median leaf 2e-6; the worst leaf, 7e-3, is ill-conditioned: rounding
the float64 parameters to float32 alone moves it that much).

Result (jax 0.10.2, 1 core, 2026-11-28): nothing is both faster by more than
10% and as accurate. ``BN fused x*a+b`` is 1.11-1.13x but its gradients are
400x less accurate (median leaf 9e-4: ``x * a + (bias - mean * a)`` cancels
when |mean| exceeds the spread); every other variant is within noise or
slower, so the models keep flax's NHWC formulation.
"""

from __future__ import annotations

import functools
import json
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app
from absl import flags
from jax import lax

from benchmarks import harness
from easyhard_jax import models
from easyhard_jax.models import layers

_VARIANTS = flags.DEFINE_list('variants', None, 'Variants (default: all).')
_ROUNDS = flags.DEFINE_integer('rounds', 10, 'Interleaved rounds.')
_STEPS = flags.DEFINE_integer('steps', 2, 'Steps per variant and round.')
_BATCH = flags.DEFINE_integer('batch_size', 128, 'Batch size.')
_WIDTH = flags.DEFINE_float('width', 0.25, 'Width multiplier.')
_ACCURACY = flags.DEFINE_bool('accuracy', False,
                              'Errors against float64 instead of timings.')

F32 = jnp.float32
NHWC = ('NHWC', 'HWIO', 'NHWC')


def _stats(x, axes):
  """Flax's one-pass statistics: mean and E[x^2] - mean^2."""
  mean = jnp.mean(x, axes)
  return mean, jnp.maximum(0.0, jnp.mean(jnp.square(x), axes) - jnp.square(mean))


def _bc(v, x, axes):
  return v.reshape([1 if i in axes else d for i, d in enumerate(x.shape)])


def _bn_centered(x, scale, bias, axes):
  mean, var = _stats(x, axes)
  inv = lax.rsqrt(var + layers.BN_EPSILON)
  y = (x - _bc(mean, x, axes)) * _bc(scale * inv, x, axes) + _bc(bias, x, axes)
  return (y, mean, var), (x, mean, inv, scale)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def bn_closed_form(x, scale, bias, axes):
  """Flax's normalisation with the textbook closed-form gradient."""
  return _bn_centered(x, scale, bias, axes)[0]


def _bn_closed_form_bwd(axes, res, cts):
  x, mean, inv, scale = res
  dy = cts[0]  # Statistics feed only the running averages (no gradient).
  xhat = (x - _bc(mean, x, axes)) * _bc(inv, x, axes)
  dbias, dscale = jnp.sum(dy, axes), jnp.sum(dy * xhat, axes)
  n = x.size / mean.size
  dx = _bc(scale * inv, x, axes) * (
      dy - _bc(dbias / n, x, axes) - xhat * _bc(dscale / n, x, axes))
  return dx, dscale, dbias


bn_closed_form.defvjp(_bn_centered, _bn_closed_form_bwd)


class BatchNorm(nn.Module):
  """Train-mode BatchNorm with flax's variables; ``impl`` picks the formula."""
  channel_axis: int = -1
  impl: str = 'flax'  # 'flax' | 'fused' (x * a + b) | 'closed_form'

  @nn.compact
  def __call__(self, x):
    c_axis = self.channel_axis % x.ndim
    c = x.shape[c_axis]
    axes = tuple(i for i in range(x.ndim) if i != c_axis)
    scale = self.param('scale', nn.initializers.ones, (c,), F32)
    bias = self.param('bias', nn.initializers.zeros, (c,), F32)
    ra_mean = self.variable('batch_stats', 'mean', jnp.zeros, (c,), F32)
    ra_var = self.variable('batch_stats', 'var', jnp.ones, (c,), F32)
    if self.impl == 'closed_form':
      y, mean, var = bn_closed_form(x, scale, bias, axes)
    elif self.impl == 'fused':
      mean, var = _stats(x, axes)
      a = scale * lax.rsqrt(var + layers.BN_EPSILON)
      y = x * _bc(a, x, axes) + _bc(bias - mean * a, x, axes)
    else:
      (y, mean, var), _ = _bn_centered(x, scale, bias, axes)
    if not self.is_initializing():
      m = layers.BN_MOMENTUM
      ra_mean.value = m * ra_mean.value + (1 - m) * mean
      ra_var.value = m * ra_var.value + (1 - m) * var
    return y


def _conv(x, kernel, s, p, dn=NHWC):
  return lax.conv_general_dilated(x, kernel, s, [(p, p), (p, p)],
                                  dimension_numbers=dn)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_forward_padded(x, kernel, s, p):
  """Forward with 17 output channels (YNNPACK), gradients at 16 (Eigen)."""
  kp = jnp.pad(kernel, ((0, 0), (0, 0), (0, 0), (0, 17 - kernel.shape[-1])))
  return _conv(x, kp, s, p)[..., :kernel.shape[-1]]


def _cfp_bwd(s, p, res, g):
  return jax.vjp(lambda a, b: _conv(a, b, s, p), *res)[1](g)


conv_forward_padded.defvjp(
    lambda x, k, s, p: (conv_forward_padded(x, k, s, p), (x, k)), _cfp_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_wgrad_matmul(x, kernel, s, p):
  """Convolution whose filter gradient is one matmul of batch-major patches."""
  return _conv(x, kernel, s, p)


def _wgrad_bwd(s, p, res, g):
  x, kernel = res
  (dx,) = jax.vjp(lambda a: _conv(a, kernel, s, p), x)[1](g)
  kh, kw, cin, cout = kernel.shape
  b, ho, wo, _ = g.shape
  xt = jnp.transpose(jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0))), (3, 0, 1, 2))
  taps = [xt[:, :, i:i + (ho - 1) * s[0] + 1:s[0], j:j + (wo - 1) * s[1] + 1:s[1]]
          for i in range(kh) for j in range(kw)]
  lhs = jnp.stack(taps).reshape(kh * kw * cin, b * ho * wo)
  dw = (lhs @ g.reshape(b * ho * wo, cout)).reshape(kernel.shape)
  return dx, dw


conv_wgrad_matmul.defvjp(
    lambda x, k, s, p: (_conv(x, k, s, p), (x, k)), _wgrad_bwd)


class Conv(nn.Module):
  """Bias-free convolution with flax's HWIO kernel; ``impl`` picks the way."""
  features: int
  k: int
  strides: tuple = (1, 1)
  impl: str = 'lax'

  @nn.compact
  def __call__(self, x):
    nchw = self.impl == 'nchw'
    cin = x.shape[1] if nchw else x.shape[-1]
    kernel = self.param('kernel', layers.conv_kernel_init,
                        (self.k, self.k, cin, self.features), F32)
    p, s = self.k // 2, tuple(self.strides)
    small = max(cin, self.features) <= 16  # Not YNNPACK's (see docstring).
    if nchw:
      return _conv(x, jnp.transpose(kernel, (3, 2, 0, 1)), s, p,
                   ('NCHW', 'OIHW', 'NCHW'))
    if self.impl in ('einsum1x1', 'im2col') and self.k == 1:
      return jnp.einsum('bhwc,cd->bhwd', x[:, ::s[0], ::s[1], :], kernel[0, 0])
    if self.impl == 'im2col':
      xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
      ho = (x.shape[1] + 2 * p - self.k) // s[0] + 1
      wo = (x.shape[2] + 2 * p - self.k) // s[1] + 1
      cols = [xp[:, i:i + (ho - 1) * s[0] + 1:s[0], j:j + (wo - 1) * s[1] + 1:s[1]]
              for i in range(self.k) for j in range(self.k)]
      return jnp.einsum('bhwk,kd->bhwd', jnp.concatenate(cols, -1),
                        kernel.reshape(-1, self.features))
    if self.impl == 'pad17' and small:
      kp = jnp.pad(kernel, ((0, 0), (0, 0), (0, 0), (0, 17 - self.features)))
      return _conv(x, kp, s, p)[..., :self.features]
    if self.impl == 'forward_pad17' and small:
      return conv_forward_padded(x, kernel, s, p)
    if self.impl == 'wgrad_matmul' and small:
      return conv_wgrad_matmul(x, kernel, s, p)
    return _conv(x, kernel, s, p)


class Block(nn.Module):
  """models.resnet.BasicBlock with swappable parts."""
  features: int
  downsample: bool
  conv: str
  bn: str

  @nn.compact
  def __call__(self, x):
    nchw = self.conv == 'nchw'
    conv = functools.partial(Conv, impl=self.conv)
    norm = functools.partial(BatchNorm, channel_axis=1 if nchw else -1,
                             impl=self.bn)
    cin, hw = (x.shape[1], x.shape[2:]) if nchw else (x.shape[-1], x.shape[1:3])
    s = layers.downsample_factors(hw) if self.downsample else (1, 1)
    y = nn.relu(norm(name='bn1')(conv(self.features, 3, s, name='conv1')(x)))
    y = norm(name='bn2')(conv(self.features, 3, name='conv2')(y))
    if self.downsample or cin != self.features:
      x = norm(name='proj_bn')(conv(self.features, 1, s, name='proj_conv')(x))
    return nn.relu(y + x)


class ResNet18(nn.Module):
  """models.resnet.ResNet (resnet18, small stem) with swappable parts."""
  num_classes: int
  width: float
  conv: str = 'lax'
  bn: str = 'flax'

  @nn.compact
  def __call__(self, x):
    nchw = self.conv == 'nchw'
    x = jnp.transpose(x, (0, 3, 1, 2)) if nchw else x
    x = Conv(layers.scale_channels(64, self.width), 3, impl=self.conv,
             name='stem_conv')(x)
    x = nn.relu(BatchNorm(1 if nchw else -1, self.bn, name='stem_bn')(x))
    for i, base in enumerate((64, 128, 256, 512)):
      for j in range(2):
        x = Block(layers.scale_channels(base, self.width), i > 0 and j == 0,
                  self.conv, self.bn, name=f'stage{i + 1}_block{j}')(x)
    feats = jnp.mean(x, (2, 3) if nchw else (1, 2))
    return nn.Dense(self.num_classes, name='head')(feats)


#: name -> ResNet18 fields (None: the project's own model).
VARIANTS = {
    'project (NHWC, flax)': None,
    'NCHW': dict(conv='nchw'),
    '1x1 as einsum': dict(conv='einsum1x1'),
    'im2col + matmul': dict(conv='im2col'),
    'Cout 16 -> 17 (YNNPACK)': dict(conv='pad17'),
    'forward only Cout 17': dict(conv='forward_pad17'),
    'filter grad as matmul (16 ch)': dict(conv='wgrad_matmul'),
    'BN fused x*a+b': dict(bn='fused'),
    'BN closed-form gradient': dict(bn='closed_form'),
}


def _loss_fn(name, model):
  cfg = VARIANTS.get(name, {})

  def loss_fn(params, stats, x, y):
    v = {'params': params, 'batch_stats': stats}
    if cfg is None:
      logits, new = model.apply(v, x, train=True, mutable=['batch_stats'])
    else:
      logits, new = model.apply(v, x, mutable=['batch_stats'])
    per_ex = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    return jnp.mean(per_ex), (new['batch_stats'], per_ex)

  return loss_fn


def _model(name):
  cfg = VARIANTS.get(name, {})
  if cfg is None:
    return models.get_model('resnet18', num_classes=10, width=_WIDTH.value)
  return ResNet18(10, _WIDTH.value, **cfg)


def _train_step(loss_fn, tx):
  def step(state, x, y):
    params, stats, opt = state
    (_, (stats, per_ex)), g = jax.value_and_grad(loss_fn, has_aux=True)(
        params, stats, x, y)
    updates, opt = tx.update(g, opt, params)
    return (optax.apply_updates(params, updates), stats, opt), per_ex
  return step


def main(argv):
  del argv
  names = _VARIANTS.value or list(VARIANTS)
  names = ['project (NHWC, flax)'] + [n for n in names if n != 'project (NHWC, flax)']
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(_BATCH.value, 28, 28, 1)), F32)
  y = jnp.asarray(rng.integers(0, 10, _BATCH.value), jnp.int32)
  v = _model(names[0]).init(jax.random.PRNGKey(0), x, train=False)
  params, stats = v['params'], v['batch_stats']
  if _ACCURACY.value:  # Float64 for the reference only; inputs stay float32.
    jax.config.update('jax_enable_x64', True)
    f64 = lambda t: jax.tree.map(lambda a: a.astype(jnp.float64), t)
    grad = lambda n, *a: jax.jit(jax.grad(_loss_fn(n, _model(n)), has_aux=True))(*a, y)
    # Reference: the project's formulation (lax conv, flax BN) in float64.
    ref = grad('float64 reference', f64(params), f64(stats),
               x.astype(jnp.float64))[0]
    print('| variant | gradient error, median leaf | worst leaf |')
    print('|---|---|---|')
    for n in names:
      err = jax.tree.map(lambda u, r: float(jnp.max(jnp.abs(u - r)) / jnp.max(jnp.abs(r))),
                         grad(n, params, stats, x)[0], ref)
      e = jax.tree.leaves(err)
      print(f'| {n} | {np.median(e):.1e} | {max(e):.1e} |', flush=True)
    return
  tx = optax.chain(optax.add_decayed_weights(5e-4),
                   optax.sgd(0.01, momentum=0.9, nesterov=True))
  progs = {}
  for n in names:
    fn = jax.jit(_train_step(_loss_fn(n, _model(n)), tx), donate_argnums=(0,))
    state = jax.tree.map(lambda a: a.copy(), (params, stats, tx.init(params)))
    for _ in range(2):  # Compile and warm up.
      state, _ = fn(state, x, y)
    progs[n] = [fn, state]
  wall, cpu = {n: [] for n in names}, {n: [] for n in names}
  for _ in range(_ROUNDS.value):
    for n, prog in progs.items():
      jax.block_until_ready(prog[1])
      tick, ctick = time.perf_counter(), time.process_time()
      for _ in range(_STEPS.value):
        prog[1], _ = prog[0](prog[1], x, y)
      jax.block_until_ready(prog[1])
      wall[n].append(1e3 * (time.perf_counter() - tick) / _STEPS.value)
      cpu[n].append(1e3 * (time.process_time() - ctick) / _STEPS.value)
  base, cbase = wall[names[0]], cpu[names[0]]
  summary = harness.device_summary()
  print(f'\nresnet18 width {_WIDTH.value}, 28x28x1, batch {_BATCH.value}, '
        f'load {summary["load_average_1min"]}, jax {summary["jax"]}, '
        f'{_ROUNDS.value} rounds x {_STEPS.value} steps\n')
  print('| variant | ms/step (median) | vs project, wall (range) | vs project, CPU |')
  print('|---|---|---|---|')
  rows = {}
  for n in names:
    r = [b / t for b, t in zip(base, wall[n])]
    rc = [b / t for b, t in zip(cbase, cpu[n])]
    rows[n] = dict(ms=statistics.median(wall[n]), ratio=statistics.median(r),
                   lo=min(r), hi=max(r), cpu_ratio=statistics.median(rc))
    print(f'| {n} | {rows[n]["ms"]:.0f} | {rows[n]["ratio"]:.2f}x '
          f'({min(r):.2f}-{max(r):.2f}) | {rows[n]["cpu_ratio"]:.2f}x |')
  print(json.dumps({**summary, 'rows': rows}))


if __name__ == '__main__':
  app.run(main)
