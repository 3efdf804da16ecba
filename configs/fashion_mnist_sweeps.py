"""The CPU removal / compression sweep behind the README's Fashion-MNIST table.

  python -m easyhard_jax.main --config=configs/fashion_mnist_sweeps.py \\
      --workdir=/tmp/eh_fmnist_sweeps

Fashion-MNIST (Debian files or TFDS), the first 20,000 training examples (the
stable index keeps its order) and the full 10,000-example test split; the
small CNN (width 1/4) x 3 seeds records easiness, then the removal and
compression sweeps retrain it with 2 seeds per strategy for 5 epochs each
(removal: easiest, hardest, random and their class-balanced forms); then
the heldout stage trains 24 more members on random subsets (consistency /
C-score estimates that every proxy is judged against).
Runtime and the table: docs/results.md, "Fashion-MNIST".
"""

from configs import fashion_mnist


def get_config():
  """Fashion-MNIST (20k), cnn x 3 seeds; removal and compression sweeps."""
  c = fashion_mnist.get_config()
  c.archs = 'cnn'
  c.max_train_examples = 20000
  c.epochs = 5
  c.probe.first_epoch_fractions = (0.25, 0.5, 0.75)
  c.probe.every_epochs = 1
  c.analysis.window = (0.0, 1.0)
  for sweep in (c.removal, c.compression):
    sweep.archs = 'cnn'
    sweep.seeds = 2
    sweep.epochs = 5
    sweep.fractions = (0.1, 0.3, 0.5)
  # Removal at 30% and 50% only: six strategies x 2 seeds at three fractions
  # would be 2.5M training images, over an hour of one CPU core by itself.
  c.removal.fractions = (0.3, 0.5)
  # The default's strategies: global and class-balanced (a global easy set
  # can be one class, docs/results.md), each with 2 seeds of its own streams.
  c.compression.strategies = ('drop_easiest', 'stratified', 'random')
  c.compression.scores = ('easiness',)
  c.compression.fractions = (0.1, 0.3, 0.5)
  c.stages.causes = False
  # Held-out ground truth (issue 22): 10 cnn members, each on its own random
  # half, 5 epochs: each example held out by 5 members on average.
  c.stages.heldout = True
  c.heldout.archs = 'cnn'
  c.heldout.members = 10
  c.heldout.ratios = (0.5,)
  c.heldout.epochs = 5
  c.heldout.members_per_program = 5
  return c
