"""CIFAR-100 at the paper's scale (GPU); same ensemble as cifar10.py.

  python -m easyhard_jax.main --config=configs/cifar100.py --workdir=/tmp/eh_cifar100

Runtime: not yet measured on a GPU. Expected: ~72-77% test accuracy for
resnet18/vgg16/densenet_bc after 30 epochs; the plain cnn lower (~55%).
"""

from configs import cifar10


def get_config():
  """CIFAR-100: the CIFAR-10 study on 100 classes."""
  c = cifar10.get_config()
  c.dataset = 'cifar100'
  return c
