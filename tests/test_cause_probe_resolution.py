"""Cause probes are judged at the control's resolution (issue 19, item 2).

A member's easiness is its share of correct window probes, so a probe with
fewer window probes than its control has a coarser easiness (one probe: 0 or
1 per member), and its agreement figures move for that reason alone. Every
variant must therefore see as many window probes as the reseed control.
"""

import numpy as np
import pytest

from configs import default
from configs import digits
from easyhard_jax.data import sources
from easyhard_jax.experiments import causes
from easyhard_jax.train import probe_schedule


def _fake_data(num_train: int, channels: int = 1):
  rng = np.random.default_rng(0)
  images = lambda n: rng.integers(0, 256, (n, 2, 2, channels), np.uint8)
  return sources.Dataset('fake', images(num_train),
                         rng.integers(0, 10, num_train).astype(np.int32),
                         images(8), rng.integers(0, 10, 8).astype(np.int32),
                         10)


def _counts(config, data, name):
  cfg = config.causes
  archs = ['cnn', 'vgg11']
  control, _ = causes.variant_config(config, cfg, causes.CONTROL, archs, 3,
                                     data)
  vconfig, vdata = causes.variant_config(config, cfg, name, archs, 2, data)
  n = len(vdata.train_labels)
  own = causes.window_probe_steps(config, vconfig, n)[0]
  ref = causes.window_probe_steps(config, control, n)[0]
  return own, ref, vconfig


# digits (1438 examples): its variants; the CIFAR-sized default (50000):
# every variant.
@pytest.mark.parametrize('get_config,num_train,channels,names', [
    (digits.get_config, 1438, 1, digits.get_config().causes.variants),
    (default.get_config, 50000, 3, sorted(set(causes.VARIANTS) -
                                          {causes.CONTROL}))])
def test_every_variant_has_its_controls_window_probe_count(
    get_config, num_train, channels, names):
  config = get_config()
  data = _fake_data(num_train, channels)
  assert names
  for name in names:
    own, ref, _ = _counts(config, data, name)
    assert len(ref) >= 2
    assert len(own) == len(ref), (name, own, ref)


def test_a_variant_too_short_to_match_is_refused_before_training():
  # digits with large_batch (1024 of 1438 per step): 2 steps per epoch, 2
  # steps in the window, where the control has 4 window probes.
  with pytest.raises(ValueError, match='Cannot probe 4 times'):
    _counts(digits.get_config(), _fake_data(1438), 'large_batch')


def test_full_batch_on_digits_probes_at_the_controls_shares_of_training():
  config = digits.get_config()
  data = _fake_data(1438)
  own, ref, vconfig = _counts(config, data, 'full_batch')
  # The control: 6 epochs of 23 steps, window (0, 1.2] epochs: the probes
  # at 0.25, 0.5, 0.75 and 1 epoch (steps 6, 12, 17, 23 of 138).
  assert ref == [6, 12, 17, 23]
  # Full batch: 45 one-step epochs, window (0, 9]: the same shares of 45.
  assert own == [2, 4, 6, 8] and tuple(vconfig.probe.at_steps) == (2, 4, 6, 8)
  # Its own schedule (what the study ran before) had a single window probe.
  with vconfig.unlocked():
    vconfig.probe.at_steps = ()
  assert len(causes.window_probe_steps(config, vconfig, 1438)[0]) == 1


def test_unmatchable_counts_are_refused():
  config = digits.get_config()
  config.analysis.source = 'fused'  # Epoch ends: 1 for the control, 9 here.
  with pytest.raises(ValueError, match='window probes'):
    _counts(config, _fake_data(1438), 'full_batch')


def test_matched_steps_map_shares_of_training_and_refuse_collisions():
  assert probe_schedule.matched_steps([6, 12, 17, 23], 138, 45, 9) == [
      2, 4, 6, 8]
  assert probe_schedule.matched_steps([10, 20], 100, 1000, 500) == [100, 200]
  with pytest.raises(ValueError, match='too few steps|only'):
    probe_schedule.matched_steps([6, 12, 17, 23], 138, 10, 2)


def test_probe_schedule_at_steps_replaces_the_rules():
  config = digits.get_config()
  assert probe_schedule.probe_schedule(config, 23)[:4] == [6, 12, 17, 23]
  config.probe.at_steps = (2, 4, 9)
  assert probe_schedule.probe_schedule(config, 1, 45) == [2, 4, 9, 45]
  # Past the end: dropped, as the other rules' steps are.
  assert probe_schedule.probe_schedule(config, 1, 5) == [2, 4, 5]
