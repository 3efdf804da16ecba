"""A PyTorch ResNet-18 on CIFAR-10 that logs its dynamics for easyhard_jax.

  python examples/torch_cifar10.py --workdir=/tmp/torch_c10 \
      --cifar10_dir=/path/to/cifar-10-batches-bin --epochs=30 --members=3
  python -m easyhard_jax.main --config=configs/cifar10.py \
      --config.archs=resnet18 --config.cifar10_dir=/path/to/cifar-10-batches-bin \
      --workdir=/tmp/torch_c10 --mode=analysis
  python -m easyhard_jax.main --config=configs/cifar10.py \
      --config.archs=resnet18 --config.cifar10_dir=/path/to/cifar-10-batches-bin \
      --workdir=/tmp/torch_c10 --mode=report

The data come through ``easyhard_jax.data`` (the same config the analysis
reads), so the example indices the loop logs are the ones the analysis and
report use. Only :class:`easyhard_jax.interop.dynamics_log.DynamicsLog`
touches the workdir; the loop is ordinary PyTorch (SGD, momentum, random
crop and flip). Members train one after another, each with its own seed.
Runtime: on one GPU about a minute per epoch per member; on CPU use the
tiny settings of tests/test_interop_torch.py.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from easyhard_jax.interop import dynamics_log


class Block(nn.Module):
  """The basic residual block of ResNet-18."""

  def __init__(self, cin: int, cout: int, stride: int):
    super().__init__()
    self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.b1 = nn.BatchNorm2d(cout)
    self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.b2 = nn.BatchNorm2d(cout)
    self.skip = nn.Sequential()
    if stride != 1 or cin != cout:
      self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                nn.BatchNorm2d(cout))

  def forward(self, x):
    y = F.relu(self.b1(self.c1(x)))
    return F.relu(self.b2(self.c2(y)) + self.skip(x))


class ResNet18(nn.Module):
  """CIFAR ResNet-18 (3x3 stem, no max-pool); ``width`` scales channels."""

  def __init__(self, num_classes: int, channels: int = 3, width: float = 1.):
    super().__init__()
    w = [max(4, int(c * width)) for c in (64, 128, 256, 512)]
    self.stem = nn.Sequential(nn.Conv2d(channels, w[0], 3, 1, 1, bias=False),
                              nn.BatchNorm2d(w[0]), nn.ReLU())
    layers, cin = [], w[0]
    for i, cout in enumerate(w):
      for j in range(2):
        layers.append(Block(cin, cout, 2 if (i and not j) else 1))
        cin = cout
    self.layers = nn.Sequential(*layers)
    self.head = nn.Linear(cin, num_classes)

  def forward(self, x):
    y = self.layers(self.stem(x))
    return self.head(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


def _to_tensor(images: np.ndarray, mean: torch.Tensor, std: torch.Tensor,
               device: str) -> torch.Tensor:
  x = torch.as_tensor(images, device=device).permute(0, 3, 1, 2).float()
  return (x / 255.0 - mean) / std


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
  """Random 4-pixel-padded crop and horizontal flip, per image."""
  b, _, h, w = x.shape
  pad = F.pad(x, (4, 4, 4, 4), mode='reflect')
  dy = torch.randint(0, 9, (b,), generator=gen)
  dx = torch.randint(0, 9, (b,), generator=gen)
  out = torch.stack([pad[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
                     for i in range(b)])
  flip = torch.rand(b, generator=gen) < 0.5
  out[flip] = out[flip].flip(3)
  return out


def probe_steps(steps_per_epoch: int, epochs: int,
                first_epoch_fractions=(0.25, 0.5, 0.75)) -> list[int]:
  """Step 0, fractions of epoch 1, then every epoch end (the last included)."""
  steps = {0} | {int(round(f * steps_per_epoch))
                 for f in first_epoch_fractions}
  steps |= {e * steps_per_epoch for e in range(1, epochs + 1)}
  return sorted(steps)


def train_and_log(data, workdir: str, *, members: int = 3, epochs: int = 30,
                  batch_size: int = 128, lr: float = 0.1, width: float = 1.0,
                  eval_batch_size: int = 1000, device: str = 'cpu',
                  first_epoch_fractions=(0.25, 0.5, 0.75)) -> dict:
  """Trains ``members`` ResNet-18s on ``data`` and logs them to ``workdir``.

  Args:
    data: an ``easyhard_jax.data.Dataset`` (uint8 NHWC images, labels, ids).
    workdir: where the records go.
    members: seeds 0..members-1, trained one after another.
    epochs, batch_size, lr, width: the run (SGD, momentum 0.9, weight decay
      5e-4, cosine learning rate).
    eval_batch_size: probe batch size.
    device: torch device.
    first_epoch_fractions: probe points inside epoch 1.

  Returns:
    DynamicsLog.close()'s summary.
  """
  n = data.train_labels.shape[0]
  spe = -(-n // batch_size)
  schedule = probe_steps(spe, epochs, first_epoch_fractions)
  mean = torch.as_tensor(data.train_images.mean((0, 1, 2)) / 255.0,
                         dtype=torch.float32, device=device).view(1, -1, 1, 1)
  std = torch.as_tensor(data.train_images.std((0, 1, 2)) / 255.0 + 1e-3,
                        dtype=torch.float32, device=device).view(1, -1, 1, 1)
  names = [f'resnet18/s{s}' for s in range(members)]
  log = dynamics_log.DynamicsLog(
      workdir, data.train_labels, test_labels=data.test_labels,
      ids=data.train_ids, test_ids=data.test_ids, members=names,
      steps_per_epoch=spe, num_classes=data.num_classes,
      meta={'framework': f'torch {torch.__version__}', 'epochs': epochs,
            'batch_size': batch_size, 'lr': lr, 'width': width})

  def probe(model, name, step):
    model.eval()
    with torch.no_grad():
      for split in ('train', 'test'):
        images, _ = data.split(split)
        for start in range(0, images.shape[0], eval_batch_size):
          idx = np.arange(start, min(start + eval_batch_size,
                                     images.shape[0]))
          logits = model(_to_tensor(images[idx], mean, std, device))
          log.probe(name, step, logits.cpu().numpy(), split=split,
                    example_index=idx)
    model.train()

  for seed, name in enumerate(names):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = ResNet18(data.num_classes, data.image_shape[-1], width).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9,
                          weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * spe)
    labels = torch.as_tensor(data.train_labels, dtype=torch.long,
                             device=device)
    step = 0
    for _ in range(epochs):
      perm = torch.randperm(n, generator=gen).numpy()
      for b in range(spe):
        if step in schedule:
          probe(model, name, step)
        idx = perm[b * batch_size:(b + 1) * batch_size]  # Stable indices.
        x = _augment(_to_tensor(data.train_images[idx], mean, std, device),
                     gen)
        logits = model(x)
        loss = F.cross_entropy(logits, labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        log.log(name, step, idx, logits.detach().cpu().numpy())
        step += 1
    probe(model, name, step)  # The end of training.
  return log.close()


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--cifar10_dir', default='',
                      help='canonical cifar-10-batches-bin (else TFDS)')
  parser.add_argument('--epochs', type=int, default=30)
  parser.add_argument('--members', type=int, default=3)
  parser.add_argument('--batch_size', type=int, default=128)
  parser.add_argument('--lr', type=float, default=0.1)
  parser.add_argument('--width', type=float, default=1.0)
  parser.add_argument('--device', default='cuda' if torch.cuda.is_available()
                      else 'cpu')
  args = parser.parse_args(argv)
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
      __file__))))
  from configs import cifar10  # pylint: disable=g-import-not-at-top
  from easyhard_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  config = cifar10.get_config()
  if args.cifar10_dir and 'cifar10_dir' in config:
    config.cifar10_dir = args.cifar10_dir
  summary = train_and_log(data_lib.load(config), args.workdir,
                          members=args.members, epochs=args.epochs,
                          batch_size=args.batch_size, lr=args.lr,
                          width=args.width, device=args.device)
  print(summary)


if __name__ == '__main__':
  main()
