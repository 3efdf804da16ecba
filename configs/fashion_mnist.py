"""Fashion-MNIST study at CPU scale: 3 architectures x 3 seeds, width 1/4.

  python -m easyhard_jax.main --config=configs/fashion_mnist.py --workdir=/tmp/eh_fmnist

Data: TFDS fashion_mnist when prepared in config.data_dir, otherwise Debian's
dataset-fashion-mnist files (apt-get install dataset-fashion-mnist), offline.
Runtime: estimated from `python -m benchmarks.train_step` at 28x28x1 on
2 CPU cores at roughly 2-3 hours (resnet18 dominates); minutes on one GPU.
Expected: ~90-92% test accuracy per member after 10 epochs.
"""

from configs import default


def get_config():
  """Fashion-MNIST: cnn, resnet18, vgg11 x 3 seeds, 10 epochs."""
  c = default.get_config()
  c.dataset = 'fashion_mnist'
  c.archs = 'cnn,resnet18,vgg11'
  c.seeds_per_arch = 3
  c.width = 0.25
  c.augment.crop_padding = 2
  c.augment.horizontal_flip = True
  c.epochs = 10
  c.batch_size = 128
  c.eval_batch_size = 1024
  c.optimizer.learning_rate = 0.05
  c.probe.first_epoch_fractions = (0.25, 0.5, 0.75)
  c.probe.every_epochs = 1
  return c
