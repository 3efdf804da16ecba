"""A seconds-scale variant of digits.py for tests and smoke runs.

  python -m easyhard_jax.main --config=configs/digits_quick.py --workdir=/tmp/q

Runtime: ~15 s on 2 CPU cores (mostly compilation). Expected: records for
2 members of a small CNN; test accuracy well above chance (not a target).
"""

from configs import digits


def get_config():
  """Digits, one small CNN architecture, 2 seeds, 2 epochs, 512 examples."""
  c = digits.get_config()
  c.archs = 'cnn'
  c.seeds_per_arch = 2
  c.width = 0.25
  c.epochs = 2
  c.batch_size = 64
  c.eval_batch_size = 256
  c.max_train_examples = 512
  c.optimizer.learning_rate = 0.1
  c.optimizer.warmup_epochs = 0.0
  c.probe.first_epoch_fractions = (0.5,)
  c.probe.every_epochs = 1
  c.checkpoint_every_epochs = 1
  c.analysis.window = (0.0, 1.0)
  for sweep in (c.removal, c.compression):
    sweep.seeds = 1
    sweep.epochs = 2
    sweep.fractions = (0.5,)
  c.removal.strategies = ('easiest', 'hardest', 'random')
  c.compression.strategies = ('drop_easiest', 'random')
  c.compression.scores = ('easiness',)
  c.causes.archs = 'cnn'
  c.causes.seeds = 1
  c.causes.epochs = 2
  c.causes.variants = ('random_labels', 'adam')
  return c
