"""Scale-out benchmark: 1 vs N devices, and the streamed loader's rate.

  python -m benchmarks.scale --part=devices --devices=2,8
  python -m benchmarks.scale --part=loader

``devices``: the training step of the --study's cnn (configs/digits.py:
3 members, batch 64, real digits; or configs/fashion_mnist.py: batch 128,
the first 8,192 real Fashion-MNIST images) and its probe pass, in fresh processes
with 1 and with each of ``--devices`` forced host devices
(``XLA_FLAGS=--xla_force_host_platform_device_count``), alternated over
``--rounds`` so machine noise hits both alike; best round reported. On a
machine with real accelerators, the N-device run uses them instead.

``loader``: examples/s of the streamed train loader (data/loader.py) on this
host, with no device step, for several thread counts: (a) ImageNet-like work,
real Fashion-MNIST images stored as 256-px JPEGs, decoded and Inception-
cropped to 224 px per example; (b) the in-memory digits, the loader's own
overhead floor.

Prints Markdown tables (paste them into the README) and a JSON line.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import subprocess
import sys
import time

import jax
import numpy as np
from absl import app
from absl import flags

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PART = flags.DEFINE_enum('part', 'devices', ['devices', 'loader', 'worker'],
                          'What to measure (worker: internal).')
_DEVICES = flags.DEFINE_list('devices', ['2', '8'],
                             'Forced host device counts to compare with 1.')
_STUDY = flags.DEFINE_enum('study', 'digits', ['digits', 'fashion_mnist'],
                           'Whose training step (cnn, 3 members) to time.')
_ROUNDS = flags.DEFINE_integer('rounds', 2, 'Alternated rounds (best of).')
_STEPS = flags.DEFINE_integer('steps', 20, 'Timed train steps per round.')
_THREADS = flags.DEFINE_list('threads', ['1', '2', '4', '8'],
                             'Loader thread counts.')
_EXAMPLES = flags.DEFINE_integer('loader_examples', 768,
                                 'Examples per loader measurement.')


def _digits_config():
  from configs import digits  # pylint: disable=g-import-not-at-top
  c = digits.get_config()
  c.archs = 'cnn'
  c.compilation_cache_dir = ''
  return c


def _study_config():
  """The --study config's cnn (Fashion-MNIST: Debian files, 8,192 examples)."""
  if _STUDY.value == 'digits':
    return _digits_config()
  from configs import fashion_mnist  # pylint: disable=g-import-not-at-top
  c = fashion_mnist.get_config()
  c.dataset, c.archs, c.max_train_examples = 'fashion_mnist_debian', 'cnn', 8192
  c.compilation_cache_dir = ''
  return c


def _worker() -> dict:
  """Times train steps and one probe pass on this process's devices."""
  from easyhard_jax.data import sources  # pylint: disable=g-import-not-at-top
  from easyhard_jax.train import ensemble  # pylint: disable=g-import-not-at-top
  from easyhard_jax.train import steps as steps_lib  # pylint: disable=g-import-not-at-top
  config = _study_config()
  data = sources.load_dataset(config)
  t = ensemble.ArchTrainer(config, data, 'cnn')
  states = t.init_states()
  buffers = steps_lib.empty_buffers(t.num_members, t.num_train)
  # Epoch after epoch: the timed steps may outlast one.
  feed = itertools.chain.from_iterable(map(t.epoch_feed, itertools.count()))
  for _ in range(2):  # Compile and warm up.
    states, buffers = t.step(states, buffers, next(feed))
  t.probe(states, 'train')
  jax.block_until_ready((states, buffers))
  tick = time.perf_counter()
  for _ in range(_STEPS.value):
    states, buffers = t.step(states, buffers, next(feed))
  jax.block_until_ready((states, buffers))
  train_s = time.perf_counter() - tick
  tick = time.perf_counter()
  t.probe(states, 'train')
  probe_s = time.perf_counter() - tick
  return {'devices': jax.device_count(), 'mesh': dict(t.mesh.shape),
          'train_examples_per_s': _STEPS.value * config.batch_size *
                                  t.num_members / train_s,
          'probe_examples_per_s': t.num_train * t.num_members / probe_s}


def _devices() -> None:
  best = {}
  for _ in range(_ROUNDS.value):
    for n in [1] + [int(d) for d in _DEVICES.value]:
      env = dict(os.environ, XLA_FLAGS=(
          f'--xla_force_host_platform_device_count={n}'))
      out = subprocess.run(
          [sys.executable, '-m', 'benchmarks.scale',
           '--part=worker', f'--steps={_STEPS.value}',
           f'--study={_STUDY.value}'], env=env, check=True, cwd=_ROOT,
          capture_output=True, text=True, timeout=900).stdout
      row = json.loads(out.strip().splitlines()[-1])
      prev = best.get(n)
      if prev is None or row['train_examples_per_s'] > prev[
          'train_examples_per_s']:
        best[n] = row
  base = best[1]
  config = _study_config()
  print(f'\n{_STUDY.value} study, cnn x 3 members, batch '
        f'{config.batch_size}, {config.dataset} '
        f'{config.get("max_train_examples") or "all"} examples, '
        f'{jax.default_backend()}, {os.cpu_count()} CPU cores\n')
  print('| devices | mesh | train ex/s | vs 1 | probe ex/s | vs 1 |')
  print('|---|---|---|---|---|---|')
  for n, r in sorted(best.items()):
    print(f"| {n} | {r['mesh']} | {r['train_examples_per_s']:.0f} | "
          f"{r['train_examples_per_s'] / base['train_examples_per_s']:.2f}x |"
          f" {r['probe_examples_per_s']:.0f} | "
          f"{r['probe_examples_per_s'] / base['probe_examples_per_s']:.2f}x |")
  print(json.dumps({'part': 'devices', 'rows': best}))


class _JpegSource:
  """Real Fashion-MNIST images as RGB JPEGs of ~256 px, decoded per read."""

  def __init__(self, num: int):
    from PIL import Image  # pylint: disable=g-import-not-at-top
    from easyhard_jax.data import sources  # pylint: disable=g-import-not-at-top
    c = _digits_config()
    c.dataset = 'fashion_mnist_debian'
    data = sources.load_dataset(c)
    rng = np.random.default_rng(0)
    self.blobs, self.labels = [], data.train_labels[:num]
    for i in range(num):
      im = Image.fromarray(data.train_images[i, ..., 0]).convert('RGB')
      im = im.resize((256, int(rng.integers(256, 342))), Image.BILINEAR)
      buf = io.BytesIO()
      im.save(buf, format='JPEG', quality=90)
      self.blobs.append(buf.getvalue())

  def __len__(self) -> int:
    return len(self.blobs)

  def __getitem__(self, i: int) -> dict:
    from PIL import Image  # pylint: disable=g-import-not-at-top
    return {'image': np.asarray(Image.open(io.BytesIO(self.blobs[i]))),
            'label': self.labels[i]}


def _loader_rate(data, threads: int, examples: int) -> float:
  from easyhard_jax.data import loader  # pylint: disable=g-import-not-at-top
  from easyhard_jax.train import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  c = _digits_config()
  c.seeds_per_arch, c.batch_size = 1, 64
  data.num_threads = threads
  feed = loader.StreamFeed(data, mesh_lib.make_mesh(c, 1, 'unroll'), None,
                           64, 64, [0], 0, 'cnn', prefetch_batches=4)
  n = data.num_examples('train')
  perms = np.arange(n)[None]
  steps = examples // 64
  tick = time.perf_counter()
  for batch in feed.epoch(perms, 0, 0, steps):
    jax.block_until_ready(batch)
  return steps * 64 / (time.perf_counter() - tick)


def _loader() -> None:
  from easyhard_jax.data import streaming  # pylint: disable=g-import-not-at-top
  jpeg = _JpegSource(_EXAMPLES.value)
  sets = {
      'JPEG ~256 px -> Inception crop 224': streaming.StreamedData(
          'fashion_jpeg', {'train': jpeg, 'test': jpeg},
          {'train': jpeg.labels, 'test': jpeg.labels}, {'train': None,
                                                        'test': None},
          10, (224, 224, 3), np.zeros(3), np.ones(3), image_size=224,
          random_resized_crop=True),
  }
  c = _digits_config()
  c.stream.enabled = True
  sets['digits in memory, 8x8 (overhead floor)'] = streaming.open_streamed(c)
  rows = {}
  print(f'\nstreamed train loader, no device step, {os.cpu_count()} CPU '
        'cores, batch 64, prefetch 4 batches\n')
  print('| source | threads | examples/s |')
  print('|---|---|---|')
  for name, data in sets.items():
    for threads in map(int, _THREADS.value):
      examples = _EXAMPLES.value if 'JPEG' in name else 8 * _EXAMPLES.value
      rate = max(_loader_rate(data, threads, examples) for _ in range(2))
      rows[f'{name} / {threads}'] = rate
      print(f'| {name} | {threads} | {rate:.0f} |')
  print(json.dumps({'part': 'loader', 'rows': rows}))


def main(argv):
  del argv
  if _PART.value == 'worker':
    print(json.dumps(_worker()))
  elif _PART.value == 'devices':
    _devices()
  else:
    _loader()


if __name__ == '__main__':
  app.run(main)
