"""The embedded default: scikit-learn digits, 3 architectures x 3 seeds, CPU.

  python -m easyhard_jax.main --config=configs/digits.py --workdir=/tmp/eh_digits

Runtime on 2 quiet CPU cores (XLA:CPU, empty compilation cache): the whole
study (record, analyze, remove, compress, probe_causes, report) about 5
minutes (2026-11-28: 284 s; record 112 s, analyze 20, remove 32, compress
11, probe_causes 97, report 8); reruns are faster (the cache).
Expected: every member reaches >= 95% test accuracy (typically 97-99%);
records for 9 members x 18 probes x 1438 train / 359 test examples.
"""

from configs import default


def get_config():
  """Digits study: cnn, resnet18, vgg11 at width 1/4, 15 epochs."""
  c = default.get_config()
  c.dataset = 'digits'
  c.archs = 'cnn,resnet18,vgg11'
  c.seeds_per_arch = 3
  c.width = 0.25
  # The plain CNN at 4x its default channels (16, 32, 64 after width): the
  # default (8, 16, 32) sits too close to the 95% bar on 8x8 digits.
  c.model_kwargs.cnn = dict(channels=(64, 128, 256))
  c.augment.crop_padding = 1
  c.augment.horizontal_flip = False   # Digits are not mirror-symmetric.
  c.epochs = 15
  c.batch_size = 64
  c.eval_batch_size = 512
  c.optimizer.learning_rate = 0.05
  c.optimizer.weight_decay = 5e-4
  c.optimizer.warmup_epochs = 1.0
  c.probe.first_epoch_fractions = (0.25, 0.5, 0.75)
  c.probe.every_epochs = 1
  c.checkpoint_every_epochs = 3
  # "Early" on digits: the first 3 epochs (epoch 1 is mostly lr warm-up).
  c.analysis.window = (0.0, 3.0)
  # Sweeps retrain the small CNN only (~1.5 and ~1 min on 2 CPU cores).
  for sweep in (c.removal, c.compression):
    sweep.archs = 'cnn'
    sweep.seeds = 2
    sweep.epochs = 8
    # Programs of 3 and 2 members: the member counts of the records stage
    # and the cause probes, so every sweep program is one they compiled.
    sweep.members_per_program = 3
  c.compression.fractions = (0.2, 0.5)
  c.compression.scores = ('easiness', 'el2n')
  # Cause probes: two architectures (agreement needs >= 2), 2 seeds each.
  # grayscale is left out (digits have one channel already), and so is
  # large_batch: full_batch asks the same question (no SGD noise) more
  # sharply, and the 30 s it took keep a cold study under 10 minutes.
  # The reseed control (control_seeds=0: the study's 3 members per arch)
  # trains the probes' recipe, cnn and vgg11 for 6 epochs, not the study's
  # 15: it costs about 1.5 probes, and compares at equal recipe.
  c.causes.archs = 'cnn,vgg11'
  c.causes.epochs = 6
  c.causes.variants = ('random_labels', 'full_batch', 'adam', 'lowpass')
  c.causes.full_batch_epochs = 45  # 45 full-batch steps: ~96% test acc.
  c.causes.lowpass_sigma = 0.7    # Digits are 8x8: a light blur.
  # Held-out ground truth (--mode=heldout; not in the default study: it
  # retrains 48 more cnn members, see docs/heldout.md): the sweeps' recipe,
  # in their 3-member programs; K=16 holds each example out 8, 4.8 and 1.6
  # times at r = 0.5, 0.7, 0.9.
  c.heldout.archs = 'cnn'
  c.heldout.members = 16
  c.heldout.epochs = 8
  c.heldout.members_per_program = 3
  return c
