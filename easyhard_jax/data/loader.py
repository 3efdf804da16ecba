"""grain pipelines feeding the streamed path, sharded by process.

Each train step consumes one global batch [members, batch] of stable example
indices, laid out as in the device-resident path: member m's row r of step s
in an epoch is ``perm[m, s * batch + r]`` while that position is below
``num_kept[m]``; the positions past it pad the epoch's last batch (index -1,
zero weight, not recorded; device_ops.batch_indices), so streamed and
device-resident runs see the same examples in the same order. A process loads
only the block of that grid its devices hold (the whole grid on one host; a
slice of rows per host on a pod) and assembles the global array with
``jax.make_array_from_callback``.

grain reads and decodes the block's examples on ``num_threads`` host threads
and assembles batches ``prefetch_batches`` steps ahead of the device. A pipeline is a MapDataset
over precomputed indices, so starting at step ``s`` of an epoch (a resumed
run) costs nothing: it indexes from there.

Device-resident data (a sources.Dataset) has a feed of the same interface,
:class:`ResidentFeed`: the uint8 splits sit on every device and a train step
gathers its own batch from the epoch's permutation. Either feed gives the
trainer (train/ensemble.py) one path:

- ``step_kind``: the train step it feeds (a key of steps.TRAIN_STEPS), and
  ``step_kwargs`` its static arguments;
- ``epoch(perms, epoch, first_step, last_step)``: one input per step;
- ``args(fed)``: the step call's data arguments for one such input;
- ``probe(split)``: probe batches over a split in stable-index order;
- ``mean``, ``std``, ``probe_batch``: normalisation and probe batch size.

:func:`make_feed` picks the feed for a dataset.
"""

from __future__ import annotations

import itertools
import math
import zlib
from typing import Any, Iterator

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from easyhard_jax import distributed
from easyhard_jax.data import device_ops
from easyhard_jax.data import sources
from easyhard_jax.data import streaming

SPLITS = ('train', 'test')


def _block(sharding, shape) -> tuple[slice, ...]:
  """The bounding box, per dimension, of this process's shards."""
  lo, hi = list(shape), [0] * len(shape)
  for idx in sharding.addressable_devices_indices_map(shape).values():
    for d, sl in enumerate(idx):
      start, stop, _ = sl.indices(shape[d])
      lo[d], hi[d] = min(lo[d], start), max(hi[d], stop)
  return tuple(slice(a, b) for a, b in zip(lo, hi))


def _global(local: np.ndarray, sharding, shape, block) -> jax.Array:
  """The global array whose process-local block (leading dims) is ``local``."""
  full = tuple(shape) + local.shape[len(shape):]
  offset = [b.start for b in block] + [0] * (len(full) - len(shape))

  def shard(idx):
    return local[tuple(slice(sl.indices(n)[0] - o, sl.indices(n)[1] - o)
                       for sl, n, o in zip(idx, full, offset))]

  return jax.make_array_from_callback(full, sharding, shard)


def _member_entropy(member) -> list[int]:
  """[seed], or [crc32(stream), seed] for an experiment's member.

  A study member (an int seed, or a dict without 'stream') keeps the crops of
  every earlier version.
  """
  if not isinstance(member, dict):
    return [int(member)]
  stream = member.get('stream')
  salt = [zlib.crc32(stream.encode()) & 0x7FFFFFFF] if stream else []
  return salt + [int(member['seed'])]


class StreamFeed:
  """Train and probe batches of a StreamedData for one mesh.

  Args:
    data: the streamed dataset.
    mesh: the ('member', 'data') mesh.
    member_axis: mesh axis that shards members, or None.
    batch_size, eval_batch_size: global sizes per step.
    member_seeds: each member's seed (host crops differ per member), or
      member dicts ('seed', optional 'stream': an experiment's stream name,
      salting its crops as ensemble.member_keys salts its keys).
    root_seed, arch: with the member seed, the host random stream.
    prefetch_batches: steps read ahead of the device.
    num_kept: [M] each member's training subset size (the first num_kept
      of its permutation); default: the whole train split.
  """

  step_kind = 'streamed'

  def __init__(self, data: streaming.StreamedData, mesh, member_axis,
               batch_size: int, eval_batch_size: int, member_seeds,
               root_seed: int, arch: str, prefetch_batches: int = 2,
               num_kept=None):
    self.data, self.batch_size = data, batch_size
    self.step_kwargs: dict[str, Any] = {}  # The batch arrives whole.
    self.mean, self.std = data.mean, data.std
    self.member_seeds = [_member_entropy(m) for m in member_seeds]
    self.num_kept = np.broadcast_to(
        data.num_examples('train') if num_kept is None else
        np.asarray(num_kept), (len(self.member_seeds),))
    self.salt = [int(root_seed), zlib.crc32(arch.encode()) & 0x7FFFFFFF]
    self.prefetch = max(1, int(prefetch_batches))
    self.train_sharding = NamedSharding(mesh, P(member_axis, 'data'))
    self.train_shape = (len(self.member_seeds), batch_size)
    self.train_block = _block(self.train_sharding, self.train_shape)
    data_size = mesh.shape['data']
    self.eval_batch = data_size * math.ceil(
        min(eval_batch_size, max(map(data.num_examples, ('train', 'test'))))
        / data_size)
    self.probe_sharding = NamedSharding(mesh, P('data'))
    self.probe_block = _block(self.probe_sharding, (self.eval_batch,))

  @property
  def probe_batch(self) -> int:
    return self.eval_batch

  def _pipeline(self, elements: np.ndarray, load, per_batch: int):
    # Imported here: only the streamed path needs grain (the GPU check's
    # image has none).
    import grain  # pylint: disable=g-import-not-at-top
    threads = self.data.num_threads
    ds = grain.MapDataset.source(elements).map(load)
    # A short element queue (grain scans it on every element) keeps the
    # threads busy; whole batches are then prefetched by one more thread.
    options = grain.ReadOptions(num_threads=threads,
                                prefetch_buffer_size=max(8, 2 * threads))
    ds = ds.to_iter_dataset(options).batch(per_batch)
    return grain.experimental.ThreadPrefetchIterDataset(
        ds, prefetch_buffer_size=self.prefetch)

  def epoch(self, perms, epoch: int, first_step: int,
            last_step: int) -> Iterator[tuple[jax.Array, ...]]:
    """(images [M,B,H,W,C], labels [M,B], indices [M,B]) for each step.

    ``indices`` are -1 at the padding of the epoch's last batch.

    Args:
      perms: int [M, N] this epoch's order per member (kept examples first),
        on the host or the device (then fetched here).
      epoch: the epoch (seeds the host crops).
      first_step, last_step: the steps of this epoch to feed, [first, last).
    """
    if isinstance(perms, jax.Array):
      perms = distributed.fetch(perms)
    num_kept = self.num_kept
    mb, rb = self.train_block
    members = np.arange(mb.start, mb.stop)
    rows = np.arange(rb.start, rb.stop)
    steps = np.arange(first_step, last_step)[:, None, None]
    kept = np.asarray(num_kept)[members][None, :, None]
    pos = steps * self.batch_size + rows[None, None, :]
    # Padding (past the kept examples) loads the last kept one, marked -1.
    examples = np.asarray(perms)[members[None, :, None],
                                 np.minimum(pos, kept - 1)]  # [S, Mb, Rb]
    ids = np.where(pos < kept, examples, -1)
    member_ids = np.broadcast_to(members[None, :, None], examples.shape)
    elements = np.stack([member_ids.ravel(), examples.ravel(), ids.ravel()],
                        axis=1)
    labels = self.data.train_labels

    def load(element):
      m, ex = int(element[0]), int(element[1])
      seed = self.salt + self.member_seeds[m] + [epoch, ex]
      return self.data.train_image(ex, seed), labels[ex], np.int32(element[2])

    local_shape = (len(members), len(rows))
    for images, y, idx in self._pipeline(elements, load, len(members) *
                                         len(rows)):
      yield tuple(
          _global(a.reshape(local_shape + a.shape[1:]), self.train_sharding,
                  self.train_shape, self.train_block)
          for a in (images, y.astype(np.int32), idx))

  def args(self, fed: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
    """The train step's data arguments: the fed batch itself."""
    return fed

  def probe(self, split: str) -> Iterator[tuple[jax.Array, jax.Array]]:
    """(images [Bp,...], labels [Bp]) over ``split`` in stable-index order.

    The last batch repeats the split's final example; callers cut at N.
    """
    n, b = self.data.num_examples(split), self.eval_batch
    (rb,) = self.probe_block
    starts = np.arange(0, n, b)[:, None]
    elements = np.minimum(starts + np.arange(rb.start, rb.stop)[None],
                          n - 1).ravel()
    labels = self.data.labels[split]

    def load(i):
      return self.data.eval_image(split, int(i)), labels[int(i)]

    for images, y in self._pipeline(elements, load, rb.stop - rb.start):
      yield (_global(images, self.probe_sharding, (b,), self.probe_block),
             _global(y.astype(np.int32), self.probe_sharding, (b,),
                     self.probe_block))


class ResidentFeed:
  """Device-resident data for one mesh: StreamFeed's interface, no host work.

  The uint8 splits are replicated on every device of the mesh once. A train
  step gathers its own batch (device_ops.batch_indices) from the epoch's
  permutations, so each step is fed those and nothing crosses to the device.

  Args:
    data: the in-memory dataset.
    mesh: the ('member', 'data') mesh.
    batch_size, eval_batch_size: global sizes per step.
    num_kept: [M] each member's training subset size.
  """

  step_kind = 'resident'

  def __init__(self, data: sources.Dataset, mesh, batch_size: int,
               eval_batch_size: int, num_kept):
    self.replicated = NamedSharding(mesh, P())
    self.images = {s: distributed.put(data.split(s)[0], self.replicated)
                   for s in SPLITS}
    self.labels = {s: distributed.put(data.split(s)[1], self.replicated)
                   for s in SPLITS}
    self.num_kept = distributed.put(np.asarray(num_kept, np.int32),
                                    self.replicated)
    # numpy mean/std (the trainer passes them to its programs as inputs).
    self.mean, self.std = device_ops.channel_stats(data.train_images)
    self.probe_batch = min(eval_batch_size,
                           max(x.shape[0] for x in self.images.values()))
    self.step_kwargs = {'batch_size': batch_size}

  def epoch(self, perms: jax.Array, epoch: int, first_step: int,
            last_step: int) -> Iterator[jax.Array]:
    """The epoch's permutations [M, N] once per step (the step gathers)."""
    del epoch  # The permutations already depend on it.
    return itertools.repeat(perms, last_step - first_step)

  def args(self, fed: jax.Array) -> tuple[jax.Array, ...]:
    """The train step's data arguments: perms, num_kept, images, labels."""
    return (fed, self.num_kept, self.images['train'], self.labels['train'])

  def probe(self, split: str) -> Iterator[tuple[jax.Array, jax.Array]]:
    """(images [Bp,...], labels [Bp]) over ``split`` in stable-index order.

    The last batch repeats the split's final example; callers cut at N.
    """
    images, labels = self.images[split], self.labels[split]
    n, b = images.shape[0], self.probe_batch
    for start in range(0, n, b):
      idx = distributed.put(np.minimum(np.arange(start, start + b), n - 1),
                            self.replicated)
      yield images[idx], labels[idx]


def make_feed(data: sources.Dataset | streaming.StreamedData, mesh,
              member_axis: str | None, *, batch_size: int,
              eval_batch_size: int, members, num_kept, root_seed: int,
              arch: str, prefetch_batches: int = 2
              ) -> ResidentFeed | StreamFeed:
  """The feed of ``data``: streamed data gets a StreamFeed, else resident.

  Args:
    data: a sources.Dataset or a streaming.StreamedData.
    mesh, member_axis: the mesh and the axis that shards members (or None).
    batch_size, eval_batch_size: global sizes per step.
    members: member dicts (seeds of the host crops, streamed only).
    num_kept: [M] each member's training subset size.
    root_seed, arch, prefetch_batches: see StreamFeed (streamed only).
  """
  if isinstance(data, streaming.StreamedData):
    return StreamFeed(data, mesh, member_axis, batch_size, eval_batch_size,
                      members, root_seed, arch, prefetch_batches, num_kept)
  return ResidentFeed(data, mesh, batch_size, eval_batch_size, num_kept)
