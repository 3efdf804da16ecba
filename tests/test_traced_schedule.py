"""The run length is traced: one program for every subset size and epoch count.

The learning rate computed inside the train step from traced
optim.ScheduleArgs must equal optax's own schedules built from Python
constants, and two trainers that differ only in subset size and epochs must
lower to the same program and share one compiled step.
"""

import dataclasses
import functools

import jax
import numpy as np
import optax
import pytest

from conftest import quick_config
from conftest import random_dataset
from easyhard_jax.data import device_ops
from easyhard_jax.train import ensemble
from easyhard_jax.train import optim
from easyhard_jax.train import steps as steps_lib

EPS = float(np.finfo(np.float32).eps)


def _optax_reference(config, spe, total):
  """The schedule as optax composes it from Python constants (slow, plain)."""
  opt = config.optimizer
  warmup = int(round(opt.warmup_epochs * spe))
  base = opt.learning_rate
  if opt.schedule == 'cosine':
    main = optax.cosine_decay_schedule(base, max(total - warmup, 1))
  elif opt.schedule == 'constant':
    main = optax.constant_schedule(base)
  else:
    main = optax.piecewise_constant_schedule(
        base, {max(int(e * spe) - warmup, 1): opt.decay_factor
               for e in opt.decay_epochs})
  if warmup == 0:
    return main
  return optax.join_schedules(
      [optax.linear_schedule(0.0, base, warmup), main], [warmup])


# (schedule, steps per epoch, warm-up epochs, epochs, decay epochs): with and
# without warm-up, fractional warm-up, boundaries that collide after rounding
# (1 and 1.1 epochs at 5 steps per epoch) and a boundary inside the warm-up.
CASES = [
    ('cosine', 23, 1.0, 15, ()),
    ('cosine', 7, 0.0, 6, ()),
    ('cosine', 5, 0.5, 3, ()),
    ('constant', 9, 1.0, 4, ()),
    ('constant', 9, 0.0, 4, ()),
    ('step', 10, 1.0, 8, (3, 6)),
    ('step', 5, 0.0, 6, (1, 1.1, 4)),
    ('step', 4, 2.0, 5, (1, 3)),
]


@pytest.mark.parametrize('kind,spe,warmup_epochs,epochs,decay', CASES)
def test_traced_schedule_equals_optax_at_every_step(kind, spe, warmup_epochs,
                                                    epochs, decay):
  config = quick_config(**{'optimizer.schedule': kind,
                           'optimizer.warmup_epochs': warmup_epochs,
                           'optimizer.decay_epochs': decay,
                           'optimizer.learning_rate': 0.05, 'epochs': epochs})
  total = epochs * spe
  counts = np.arange(total + 3, dtype=np.int32)  # Past the end too.
  reference = _optax_reference(config, spe, total)
  want = np.array([float(reference(np.int32(c))) for c in counts])
  args = optim.schedule_args(config, spe, total)

  @jax.jit
  def traced(s, count):  # Every schedule number is an argument here.
    return optim.learning_rate_fn(kind, s, config.optimizer.decay_factor)(
        count)

  got = np.asarray(jax.vmap(traced, in_axes=(None, 0))(args, counts))
  # A few float32 operations on values <= lr (a ratio, pi times it, cos,
  # a product), each rounding by at most EPS/2 relative to lr, and cos'
  # slope <= 1 on an argument <= pi: 8 * EPS * lr bounds their sum.
  np.testing.assert_allclose(got, want, rtol=0, atol=8 * EPS * 0.05)


def test_schedule_args_carry_the_run_length():
  config = quick_config(**{'optimizer.schedule': 'step',
                           'optimizer.warmup_epochs': 1.0,
                           'optimizer.decay_epochs': (1, 1.1, 4)})
  s = optim.schedule_args(config, 5, 30)
  assert (int(s.steps_per_epoch), int(s.warmup_steps), int(s.total_steps)) == (
      5, 5, 30)
  # 1 and 1.1 epochs are both step 5 - 5 -> 1 (optax's dict keeps one); the
  # spare slot is a boundary never reached, so K stays len(decay_epochs).
  never = optim._NEVER  # pylint: disable=protected-access
  assert s.boundaries.tolist() == [1, 15, never]


def _trainers():
  """Two trainers that differ in subset size and epochs, nothing else."""
  config = quick_config(seeds_per_arch=2, epochs=2,
                        **{'optimizer.warmup_epochs': 1.0})
  data = random_dataset()
  n = len(data.train_labels)
  rng = np.random.default_rng(0)
  keep = np.stack([rng.permutation(n) < n // 3 for _ in range(2)])
  full = ensemble.ArchTrainer(config, data, 'cnn')
  part = ensemble.ArchTrainer(config, data, 'cnn', keep=keep,
                              total_steps=7)
  assert (full.spe, full.total_steps) != (part.spe, part.total_steps)
  return full, part


def _lowered_text(t, baked: bool = False):
  """HLO of ``t``'s train step with its own arguments (no compile).

  ``baked``: the schedule's numbers as constants of the program (as steps
  per epoch and the learning-rate schedule were before they were traced).
  """
  step = functools.partial(
      steps_lib.ensemble_train_step, strategy=t.strategy, model=t.model,
      optimizer=t.optimizer, batch_size=t.spec.batch_size,
      augment=device_ops.AugmentConfig(t.spec.augment.crop_padding, False),
      mean=t.mean, std=t.std, dtype=t.dtype)
  host = t.spec.schedule
  if baked:
    fn = jax.jit(lambda st, b, k, *data: step(st, b, k, host, *data))
    args = t.feed.args(t.epoch_perms(0))
  else:
    fn = jax.jit(step)
    args = (t.schedule,) + t.feed.args(t.epoch_perms(0))
  buffers = steps_lib.empty_buffers(t.num_members, t.num_train)
  with jax.threefry_partitionable(False):
    return fn.lower(t.init_states(), buffers, t.aug_keys, *args).as_text()


@pytest.mark.slow
def test_subset_size_and_epochs_share_one_program():
  full, part = _trainers()
  assert full.train_step is part.train_step  # One jitted function.
  assert _lowered_text(full) == _lowered_text(part)
  # The comparison sees a leaked constant: the same step with the schedule
  # baked in gives two programs.
  assert _lowered_text(full, baked=True) != _lowered_text(part, baked=True)
  # Both trainers run with one compilation: at most one new cache entry
  # (none if an earlier test in this process compiled these shapes).
  jitted = full.train_step.__wrapped__  # Inside the classic-RNG wrapper.
  before = jitted._cache_size()  # pylint: disable=protected-access
  for t in (full, part):
    states = t.init_states()
    buffers = steps_lib.empty_buffers(t.num_members, t.num_train)
    states, buffers = t.step(states, buffers, next(t.epoch_feed(0)))
    assert np.isfinite(np.asarray(buffers['loss'])).sum() == (
        t.num_members * t.spec.batch_size)
  assert jitted._cache_size() - before <= 1  # pylint: disable=protected-access


def test_data_with_other_pixel_statistics_share_the_programs():
  """A low-pass or grayscale probe changes mean/std only: same programs."""
  config = quick_config(seeds_per_arch=2, epochs=1)
  data = random_dataset()
  # Even pixels, so the dimmed copy is exactly half of them.
  data = dataclasses.replace(data, train_images=data.train_images & 254,
                             test_images=data.test_images & 254)
  dim = dataclasses.replace(data, train_images=data.train_images // 2,
                            test_images=data.test_images // 2)
  a = ensemble.ArchTrainer(config, data, 'cnn')
  b = ensemble.ArchTrainer(config, dim, 'cnn')
  assert not np.allclose(a.mean, b.mean)
  assert a.train_step is b.train_step and a.probe_step is b.probe_step
  train_jit = a.train_step.__wrapped__  # Inside the classic-RNG wrapper.
  before = (train_jit._cache_size(),  # pylint: disable=protected-access
            a.probe_step._cache_size())  # pylint: disable=protected-access
  probes = []
  for t in (a, b):
    states = t.init_states()
    buffers = steps_lib.empty_buffers(t.num_members, t.num_train)
    states, _ = t.step(states, buffers, next(t.epoch_feed(0)))
    probes.append(t.probe(states, 'test'))
  after = (train_jit._cache_size(),  # pylint: disable=protected-access
           a.probe_step._cache_size())  # pylint: disable=protected-access
  assert after[0] - before[0] <= 1 and after[1] - before[1] <= 1
  # The statistics are inputs, not ignored: halved pixels standardised with
  # their own mean/std are the same inputs up to a few float32 ulps, so the
  # members (same keys, same order) agree far inside 1e-3; with the first
  # trainer's statistics baked in, the dimmed inputs would shift by about
  # one standard deviation and the losses by far more.
  np.testing.assert_allclose(probes[0]['loss'], probes[1]['loss'],
                             rtol=1e-3, atol=1e-4)
