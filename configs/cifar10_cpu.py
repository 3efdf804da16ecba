"""Real CIFAR-10 (all 50,000 train images) on a 2-core CPU: cnn + vgg11 x 3.

  bash launch/fetch_cifar10.sh ~/.cache/easyhard_jax/cifar10 --cifar-n
  python -m easyhard_jax.main --config=configs/cifar10_cpu.py \
      --workdir=/tmp/eh_cifar10_cpu

Human label noise (CIFAR-10N, the label-issue analysis on real errors):

  python -m easyhard_jax.main --config=configs/cifar10_cpu.py \
      --config.train_labels=$HOME/.cache/easyhard_jax/cifar10/CIFAR-10_human.pt:aggre_label \
      --config.train_labels_order=original --workdir=/tmp/eh_cifar10n_aggre

Held-out consistency (C-score) estimates, judged against the published
C-scores (docs/heldout.md):

  python -m easyhard_jax.main --config=configs/cifar10_cpu.py --mode=heldout \
      --config.reference.path=cifar10-cscores-orig-order.npz \
      --config.reference.key=scores --config.reference.label_key=labels \
      --config.reference.order=original --workdir=/tmp/eh_cifar10_cpu

Sized by measurement for a CPU (docs/results.md, "CIFAR-10"): two cheap
architectures at ~200 train images/s each on one core, two epochs, three
probe points (epoch 0.5, 1, 2) over all 60,000 images; records + analysis +
report, no retraining stages (those are `--mode=removal` / `compression` on
request: hours on a CPU). Runtime and each member's test accuracy: see
docs/results.md. At this scale the members are weak judges (two epochs):
the paper's claims are tested at the quality a CPU affords, and
configs/cifar10.py is the paper's scale on a GPU.
"""

from configs import default


def get_config():
  """CIFAR-10 on CPU: cnn (32-64-128) + vgg11 (width 1/4), 3 seeds, 2 epochs."""
  c = default.get_config()
  c.dataset = 'cifar10'
  # The binaries of launch/fetch_cifar10.sh (TFDS when this is emptied).
  c.cifar10_dir = '~/.cache/easyhard_jax/cifar10'
  c.archs = 'cnn,vgg11'
  c.seeds_per_arch = 3
  c.width = 0.25
  # The plain CNN at 4x its default channels, so (32, 64, 128) after width:
  # as fast as vgg11 at 1/4 on a CPU core, and a better judge than (8, 16, 32).
  c.model_kwargs.cnn = dict(channels=(128, 256, 512))
  c.epochs = 2
  c.batch_size = 128
  c.eval_batch_size = 1000
  c.optimizer.learning_rate = 0.05
  c.optimizer.weight_decay = 5e-4
  c.optimizer.warmup_epochs = 0.5
  # Three probes of both splits: every probe is a forward pass over 60,000
  # images per member, about as costly as a third of an epoch of training.
  c.probe.first_epoch_fractions = (0.5,)
  c.probe.every_epochs = 1
  c.checkpoint_every_epochs = 1
  # "Early": the whole (short) run; easiness over the probes at 0.5, 1, 2.
  c.analysis.window = (0.0, 2.0)
  c.analysis.similarity.max_set_size = 2000
  for stage in ('removal', 'compression', 'causes'):
    c.stages[stage] = False
  # Sweeps on request (--mode=removal / compress): the cnn only, 2 seeds.
  for sweep in (c.removal, c.compression):
    sweep.archs = 'cnn'
    sweep.seeds = 2
    sweep.epochs = 2
  c.compression.fractions = (0.3, 0.5, 0.7)
  # Held-out ground truth on request (--mode=heldout, 62 minutes on one
  # core): 16 cnn members, each on its own random half, 2 epochs, so each
  # image is held out by 8 of them (docs/heldout.md, "CIFAR-10").
  c.heldout.archs = 'cnn'
  c.heldout.members = 16
  c.heldout.ratios = (0.5,)
  c.heldout.epochs = 2
  c.heldout.members_per_program = 4
  return c
