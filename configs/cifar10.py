"""CIFAR-10 at the paper's scale: 4 architectures x 3 seeds, full width (GPU).

  python -m easyhard_jax.main --config=configs/cifar10.py --workdir=/tmp/eh_cifar10

Data: TFDS cifar10 (downloaded and prepared as array_record on first use, or
read from config.data_dir). Runtime: not yet measured on a GPU; on CPU it is
impractical. Expected: ~93-95% test accuracy for resnet18/vgg16/densenet_bc
and ~85% for the plain cnn after 30 epochs with cosine decay.
"""

from configs import default


def get_config():
  """CIFAR-10: resnet18, vgg16, densenet_bc, cnn x 3 seeds, 30 epochs."""
  c = default.get_config()
  c.dataset = 'cifar10'
  c.archs = 'resnet18,vgg16,densenet_bc,cnn'
  c.seeds_per_arch = 3
  c.width = 1.0
  c.epochs = 30
  c.batch_size = 128
  c.optimizer.learning_rate = 0.1
  c.probe.first_epoch_fractions = (0.25, 0.5, 0.75)
  c.probe.every_epochs = 1
  return c
