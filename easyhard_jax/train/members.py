"""Members: one model each, (architecture, seed, random stream, tags).

A member is a frozen dataclass. It reads as the mapping the records store
(``dict(member)``: name, arch, seed, root_seed, the stream when it has one,
then its tags), so records, fingerprints and experiment results hold exactly
the dicts they always held. The study's members carry no stream; every
experiment group names one (``'causes/adam'``, ``'removal/frac_0.300'``,
``'heldout/r0.5'``), so its random streams are its own.

Keys: ``fold_in(fold_in(fold_in(key(root_seed), crc32(stream)), crc32(arch)),
seed)``, the stream's fold left out for a study member, so the study's keys
are those of every earlier version.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import zlib
from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp


def stream_salt(stream: str) -> int:
  """The 31-bit salt of a random stream's name (crc32, as for arch names)."""
  return zlib.crc32(stream.encode()) & 0x7FFFFFFF


@dataclasses.dataclass(frozen=True)
class Member(collections.abc.Mapping):
  """One model of a member group.

  Attributes:
    name: unique within the group, e.g. 'cnn/s0' or 'cnn/random/none/s1'.
    arch: model registry name.
    seed: the member's seed within its stream.
    root_seed: the config's root seed.
    stream: the random stream's name ('' for a study member).
    tags: (key, value) pairs an experiment records with the member
      (strategy, score, fraction, kept, ratio, ...), in order.
  """
  name: str
  arch: str
  seed: int
  root_seed: int
  stream: str = ''
  tags: tuple[tuple[str, Any], ...] = ()

  @classmethod
  def of(cls, name: str, arch: str, seed: int, root_seed: int,
         stream: str = '', **tags) -> 'Member':
    """A member with keyword tags (kept in the order given)."""
    return cls(name=name, arch=arch, seed=int(seed), root_seed=int(root_seed),
               stream=stream or '', tags=tuple(tags.items()))

  @classmethod
  def coerce(cls, m, arch: str, root_seed: int) -> 'Member':
    """A Member from a Member, a member dict or a plain int seed."""
    if isinstance(m, Member):
      return m
    if not isinstance(m, collections.abc.Mapping):
      m = {'name': f'{arch}/s{int(m)}', 'arch': arch, 'seed': int(m),
           'root_seed': int(root_seed)}
    known = ('name', 'arch', 'seed', 'root_seed', 'stream')
    return cls.of(m['name'], m.get('arch', arch), m['seed'],
                  m.get('root_seed', root_seed), m.get('stream') or '',
                  **{k: v for k, v in m.items() if k not in known})

  def as_dict(self) -> dict[str, Any]:
    """The dict records store (no 'stream' key for a study member)."""
    out = {'name': self.name, 'arch': self.arch, 'seed': self.seed,
           'root_seed': self.root_seed}
    if self.stream:
      out['stream'] = self.stream
    out.update(self.tags)
    return out

  def __getitem__(self, key: str) -> Any:
    return self.as_dict()[key]

  def __iter__(self) -> Iterator[str]:
    return iter(self.as_dict())

  def __len__(self) -> int:
    return len(self.as_dict())

  def key(self) -> jax.Array:
    """The member's base key (init, data order and augmentation fold it)."""
    root = jax.random.key(self.root_seed)
    if self.stream:
      root = jax.random.fold_in(root, stream_salt(self.stream))
    root = jax.random.fold_in(root, stream_salt(self.arch))
    return jax.random.fold_in(root, self.seed)


def study_members(arch: str, seeds: int, root_seed: int,
                  stream: str = '') -> tuple[Member, ...]:
  """Seeds 0..seeds-1 of ``arch`` on all data (the records stage's group).

  Args:
    arch: the architecture.
    seeds: how many members (``config.seeds_per_arch``).
    root_seed: ``config.seed``.
    stream: the group's random stream; '' for the study itself.
  """
  return tuple(Member.of(f'{arch}/s{i}', arch, i, root_seed, stream)
               for i in range(seeds))


def member_keys(members: Sequence[Member]) -> jax.Array:
  """Keys [len(members)] of ``members`` (see Member.key)."""
  return jnp.stack([m.key() for m in members])
