"""The peer: the project's ResNet train step written the way a PyTorch user would.

The network mirrors ``easyhard_jax.models.resnet.ResNet`` (CIFAR stem: one 3x3
stride-1 conv-BN-ReLU, four stages of basic blocks with 1x1 projection
shortcuts, global average pool, linear head; convolutions without bias, He
fan_out init, BatchNorm momentum 0.1 / eps 1e-5 in PyTorch's convention), and
the step does the project's work: gather a batch from a uint8 NHWC dataset on
the device, random crop (4 px zero padding) and flip, normalise, forward,
per-example cross-entropy kept by example index, mean, backward, SGD with
Nesterov momentum and weight decay.

It runs as a worker process (``python -m benchmarks.torch_peer``) that the
benchmarks drive over stdin/stdout, one JSON object a line, so PyTorch and JAX
never share a process and rounds of the two can be interleaved:

  {"cmd": "setup", "variants": [...], ...}  -> {"ready": {name: info}}
  {"cmd": "time", "steps": 10}              -> {"seconds": {name: s}}
  {"cmd": "quit"}

A variant is ``{"name", "amp_bf16", "channels_last", "compile"}``. Failures
(no torch, ``torch.compile`` without a compiler) come back as
``{"error": ...}`` per variant, never as a crash of the caller.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback

import numpy as np


def _torch():
  import torch  # pylint: disable=g-import-not-at-top
  return torch


def build_resnet(num_classes: int, in_channels: int, width: float,
                 stage_sizes=(2, 2, 2, 2), stage_widths=(64, 128, 256, 512)):
  """ResNet-18 (by default) as in models/resnet.py, as a torch.nn.Module."""
  torch = _torch()
  nn = torch.nn

  def ch(c):
    return max(1, int(round(c * width)))

  def bn(c):
    return nn.BatchNorm2d(c, eps=1e-5, momentum=0.1)

  class Block(nn.Module):
    """Two 3x3 conv-BN layers with an identity or projection shortcut."""

    def __init__(self, cin, cout, stride):
      super().__init__()
      self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
      self.bn1 = bn(cout)
      self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
      self.bn2 = bn(cout)
      self.proj = None
      if stride != 1 or cin != cout:
        self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                  bn(cout))

    def forward(self, x):
      y = torch.relu(self.bn1(self.conv1(x)))
      y = self.bn2(self.conv2(y))
      return torch.relu(y + (x if self.proj is None else self.proj(x)))

  layers = [nn.Conv2d(in_channels, ch(stage_widths[0]), 3, 1, 1, bias=False),
            bn(ch(stage_widths[0])), nn.ReLU()]
  cin = ch(stage_widths[0])
  for i, (n, w) in enumerate(zip(stage_sizes, stage_widths)):
    for j in range(n):
      layers.append(Block(cin, ch(w), 2 if (i > 0 and j == 0) else 1))
      cin = ch(w)
  layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
  model = nn.Sequential(*layers)
  for m in model.modules():
    if isinstance(m, nn.Conv2d):
      nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
  return model


def synthetic_arrays(num: int, shape, num_classes: int = 10, seed: int = 0):
  """Random uint8 images [N, H, W, C] and int labels, as the benchmarks use."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (num,) + tuple(shape), dtype=np.uint8)
  return images, rng.integers(0, num_classes, num).astype(np.int64)


class PeerStep:
  """One compiled-or-eager PyTorch train step on a device-resident dataset."""

  def __init__(self, spec: dict, variant: dict):
    torch = self.torch = _torch()
    self.device = torch.device(spec.get('device') or (
        'cuda' if torch.cuda.is_available() else 'cpu'))
    if self.device.type == 'cuda':
      torch.backends.cudnn.benchmark = True
    shape = tuple(spec['shape'])
    images, labels = synthetic_arrays(spec['num_examples'], shape)
    self.images = torch.from_numpy(images).to(self.device)
    self.labels = torch.from_numpy(labels).to(self.device)
    self.batch, self.pad = int(spec['batch_size']), 4
    mean = images.reshape(-1, shape[-1]).mean(0) / 255.0
    std = images.reshape(-1, shape[-1]).std(0) / 255.0
    self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device)
    self.std = torch.tensor(std, dtype=torch.float32, device=self.device)
    self.amp = bool(variant.get('amp_bf16'))
    self.channels_last = bool(variant.get('channels_last', True))
    arch = {k: tuple(spec[k]) for k in ('stage_sizes', 'stage_widths')
            if k in spec}
    model = build_resnet(10, shape[-1], float(spec['width']), **arch).to(
        self.device)
    if self.channels_last:
      model = model.to(memory_format=torch.channels_last)
    self.model = model
    self.opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9,
                               nesterov=True, weight_decay=5e-4)
    self.loss_buffer = torch.full((len(labels),), float('nan'),
                                  device=self.device)
    self.forward = torch.compile(model) if variant.get('compile') else model
    self.gen = torch.Generator(device=self.device).manual_seed(0)

  def _batch(self):
    torch, b, p = self.torch, self.batch, self.pad
    idx = torch.randint(0, len(self.labels), (b,), device=self.device,
                        generator=self.gen)
    x = self.images[idx]  # [B, H, W, C] uint8.
    h, w = x.shape[1:3]
    x = torch.nn.functional.pad(x, (0, 0, p, p, p, p))
    off = torch.randint(0, 2 * p + 1, (b, 2), device=self.device,
                        generator=self.gen)
    rows = (off[:, :1] + torch.arange(h, device=self.device))[:, :, None]
    cols = (off[:, 1:] + torch.arange(w, device=self.device))[:, None, :]
    x = x[torch.arange(b, device=self.device)[:, None, None], rows, cols]
    flip = torch.rand(b, device=self.device, generator=self.gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(2), x)
    x = (x.float() / 255.0 - self.mean) / self.std
    x = x.permute(0, 3, 1, 2)  # NCHW view of NHWC memory: channels_last.
    if not self.channels_last:
      x = x.contiguous()
    return idx, x, self.labels[idx]

  def step(self):
    """One SGD step with per-example losses kept at their example index."""
    torch = self.torch
    idx, x, y = self._batch()
    with torch.autocast(self.device.type, dtype=torch.bfloat16,
                        enabled=self.amp):
      logits = self.forward(x)
    losses = torch.nn.functional.cross_entropy(logits.float(), y,
                                               reduction='none')
    self.loss_buffer[idx] = losses.detach()
    self.opt.zero_grad(set_to_none=True)
    losses.mean().backward()
    self.opt.step()

  def sync(self):
    if self.device.type == 'cuda':
      self.torch.cuda.synchronize()

  def run(self, steps: int) -> float:
    """Seconds for ``steps`` steps (device work included)."""
    self.sync()
    tick = time.perf_counter()
    for _ in range(steps):
      self.step()
    self.sync()
    return time.perf_counter() - tick


def _serve(lines, out) -> None:
  """The worker loop: one JSON command per input line, one reply per line."""
  steps = {}
  for line in lines:
    msg = json.loads(line)
    if msg['cmd'] == 'quit':
      return
    if msg['cmd'] == 'setup':
      ready = {}
      try:
        torch = _torch()
        if msg.get('threads'):
          torch.set_num_threads(int(msg['threads']))
        info = {'torch': torch.__version__,
                'threads': torch.get_num_threads()}
      except Exception as e:  # pylint: disable=broad-except
        out({'error': f'torch unavailable: {e!r}'})
        continue
      for v in msg['variants']:
        try:
          tick = time.perf_counter()
          s = PeerStep(msg, v)
          s.run(int(msg.get('warmup', 3)))  # Compiles (torch.compile), tunes.
          steps[v['name']] = s
          ready[v['name']] = dict(info, warmup_s=time.perf_counter() - tick,
                                  device=str(s.device))
        except Exception as e:  # pylint: disable=broad-except
          ready[v['name']] = {'error': repr(e)[:2000],
                              'trace': traceback.format_exc()[-2000:]}
      out({'ready': ready})
    elif msg['cmd'] == 'time':
      out({'seconds': {name: s.run(int(msg['steps']))
                       for name, s in steps.items()}})


class PeerProcess:
  """Client of the worker: starts it, sends commands, reads replies.

  ``setup`` returns at once (the worker builds and warms up, e.g. runs
  ``torch.compile``, while the caller goes on); ``ready()`` waits for it.
  """

  def __init__(self, spec: dict, env: dict | None = None):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    self.proc = subprocess.Popen(
        [sys.executable, '-m', 'benchmarks.torch_peer'], cwd=root,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env=dict(os.environ, **(env or {})))
    self._send(dict(spec, cmd='setup'))

  def _send(self, msg: dict) -> None:
    self.proc.stdin.write(json.dumps(msg) + '\n')
    self.proc.stdin.flush()

  def _reply(self, timeout_s: float | None = None) -> dict:
    if timeout_s is not None:
      import select  # pylint: disable=g-import-not-at-top
      if not select.select([self.proc.stdout], [], [], max(0, timeout_s))[0]:
        self.proc.kill()
        return {'error': f'torch peer not ready after {timeout_s:.0f} s'}
    line = self.proc.stdout.readline()
    if not line:
      return {'error': f'torch peer exited with code {self.proc.wait()}'}
    return json.loads(line)

  def ready(self, timeout_s: float | None = None) -> dict:
    """{variant: info or {'error': ...}} ({'PyTorch': {'error'}}: no torch)."""
    reply = self._reply(timeout_s)
    return reply.get('ready', {'PyTorch': reply})

  def time(self, steps: int) -> dict:
    """{variant: seconds for ``steps`` steps} (one interleaved round)."""
    self._send({'cmd': 'time', 'steps': steps})
    return self._reply().get('seconds', {})

  def close(self) -> None:
    if self.proc.poll() is None:
      try:
        self._send({'cmd': 'quit'})
        self.proc.wait(timeout=30)
      except (OSError, subprocess.TimeoutExpired):
        self.proc.kill()


def main() -> None:
  def out(obj):
    sys.stdout.write(json.dumps(obj) + '\n')
    sys.stdout.flush()

  _serve(sys.stdin, out)


if __name__ == '__main__':
  main()
