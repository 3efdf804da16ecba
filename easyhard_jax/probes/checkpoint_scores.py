"""Any per-example score after the fact, from a study's kept checkpoints.

A study keeps the member-stacked train states at the probes of its easiness
window (``WORKDIR/analysis_checkpoints/{arch}/{step}``, see
train/probe_schedule.analysis_checkpoint_steps). This module restores them
and runs a user's per-example function over a split, so a new score needs no
retraining::

  import jax, jax.numpy as jnp
  from easyhard_jax.probes import checkpoint_scores

  def entropy(model, variables, images, labels):   # -> [B]
    logp = jax.nn.log_softmax(model.apply(variables, images, train=False))
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)

  checkpoint_scores.score_checkpoints(workdir, config, entropy, 'entropy')
  s = checkpoint_scores.load_scores(workdir, 'entropy')  # s.values [M, C, N]

The function gets one member's flax module, its variables ({'params',
'batch_stats'}), a batch of normalized images [B, H, W, C] (exactly what the
probe pass feeds the model) and int32 labels [B], and returns a float [B].
It is traced inside one jitted program per batch that runs every member (the
study's member strategy, the batch sharded over the mesh's data axis, as the
probe step), so it must be a pure JAX function. GraNd (probes/grand.py) is
one such function.

Results are records chunks, like any probe, under
``WORKDIR/checkpoint_probes/scores/{name}/records/``: a manifest and one chunk
``{arch}/probe_{split}_{k:04d}.npz`` per checkpoint holding ``{name}`` as
float32 [members, examples] in the split's stable example order, with the
step and the records fingerprint. :func:`load_scores` stacks them as
[members, checkpoints, examples] and :func:`window_score` gives the member
mean at the easiness window's end; both live in score_store.py (numpy only,
so the analysis can read scores without importing training code).
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from easyhard_jax import config_fields
from easyhard_jax import distributed
from easyhard_jax.storage import files
from easyhard_jax.storage import records
from easyhard_jax.analysis import score_store
from easyhard_jax.data import device_ops
from easyhard_jax.data import streaming
from easyhard_jax.train import analysis_checkpoints
from easyhard_jax.train import checkpoints
from easyhard_jax.train import ensemble
from easyhard_jax.train import mesh as mesh_lib
from easyhard_jax.train import steps as steps_lib

# fn(model, variables, images [B, H, W, C], labels [B]) -> float [B].
ScoreFn = Callable[[Any, Mapping[str, Any], jax.Array, jax.Array], jax.Array]
SOURCES = {'analysis': 'analysis_checkpoints', 'resume': 'checkpoints'}
# Reading needs no training code: these live in score_store.py.
scores_dir = score_store.scores_dir
open_store = score_store.open_store
load_scores = score_store.load_scores
window_score = score_store.window_score
Scores = score_store.Scores
# The probe step's member loop (unroll or vmap, as the study runs members).
_map_members = steps_lib._map_members  # pylint: disable=protected-access


def ensemble_score_step(states: steps_lib.TrainState, images: jax.Array,
                        labels: jax.Array, *, fns, model, strategy: str, mean,
                        std, dtype, batch_sharding=None,
                        member_axis: str | None = None
                        ) -> dict[str, jax.Array]:
  """Every per-example function of ``fns`` for every member: each [M, B].

  The batch is prepared as in steps.ensemble_probe_step (sharding
  constraint over the data axis, normalization); ``fns`` is a tuple of
  (name, fn) bound by functools.partial.
  """
  if batch_sharding is not None:
    images = jax.lax.with_sharding_constraint(images, batch_sharding)
  x = device_ops.normalize(images, mean, std, dtype)

  def member(state):
    variables = {'params': state.params, 'batch_stats': state.batch_stats}
    out = {}
    for name, fn in fns:
      value = jnp.asarray(fn(model, variables, x, labels))
      if value.shape != labels.shape:
        raise ValueError(f'Score {name!r}: the function must return one '
                         f'value per example, shape {labels.shape}; got '
                         f'{value.shape}.')
      out[name] = value.astype(jnp.float32)
    return out

  return _map_members(member, strategy, states, member_axis=member_axis)


class Scorer:
  """Per-example functions over whole splits for one member group.

  Args:
    config: the study config.
    data: the dataset (as ensemble.ArchTrainer takes it).
    arch: the architecture (the study's members of it).
    fns: {name: ScoreFn}; all run in one pass per batch.
    batch_size: examples per batch (default config.eval_batch_size); per-
      example gradients hold a parameter-sized gradient per example, so
      GraNd wants a smaller batch than the probe pass.
  """

  def __init__(self, config, data, arch: str, fns: Mapping[str, ScoreFn],
               batch_size: int | None = None):
    if batch_size:
      config = config.copy_and_resolve_references()
      config.eval_batch_size = int(batch_size)
    self.names = tuple(fns)
    t = self.trainer = ensemble.ArchTrainer(config, data, arch)
    member_axis = 'member' if t.mesh.shape['member'] > 1 else None
    step = jax.jit(functools.partial(
        ensemble_score_step, fns=tuple(fns.items()), model=t.model,
        strategy=t.strategy, mean=t.mean, std=t.std, dtype=t.dtype,
        batch_sharding=mesh_lib.batch_sharding(t.mesh),
        member_axis=member_axis))
    self.step = mesh_lib.one_in_flight(t.mesh, step)

  def __call__(self, states, split: str) -> dict[str, np.ndarray]:
    """{name: float32 [M, N]} over ``split`` in stable example order."""
    t = self.trainer
    n = len(getattr(t.data, f'{split}_labels'))
    # The probe pass's batches (last one padded by repeating the final
    # example; cut off below).
    batches = t.probe_batches(split)
    outs = [self.step(states, x, y) for x, y in batches]
    table = distributed.fetch({k: jnp.concatenate([o[k] for o in outs], 1)
                               for k in self.names})
    return {k: np.asarray(v, np.float32)[:, :n] for k, v in table.items()}


def kept_checkpoints(config, workdir: str, arch: str, source: str = 'analysis',
                     steps: Sequence[int] | None = None
                     ) -> tuple[checkpoints.Checkpointer, list[int]]:
  """(checkpointer, sorted steps) of ``arch``'s saved states in ``workdir``.

  Args:
    config: the study config.
    workdir: the workdir that holds the checkpoints.
    arch: the member group.
    source: 'analysis' (the states kept for analysis, never deleted) or
      'resume' (the rolling resume checkpoints, epoch ends only).
    steps: only these steps (each must be saved); default every saved one.
  """
  if source not in SOURCES:
    raise ValueError(f'checkpoint_probes.source must be one of '
                     f'{tuple(SOURCES)}, got {source!r}.')
  directory = os.path.join(workdir, SOURCES[source], arch)
  policy = ("config.analysis_checkpoints is not 'none' (or use "
            "checkpoint_probes.source='resume')" if source == 'analysis'
            else 'config.checkpoints_to_keep')
  if not files.isdir(directory):
    raise FileNotFoundError(
        f'No checkpoints for {arch!r} in {directory}; run --mode=records with '
        f'{policy}, or set checkpoint_probes.source_workdir to the workdir '
        'that has them.')
  if source == 'analysis':  # Never rotated: they may outlive their records.
    analysis_checkpoints.check(directory,
                               ensemble.study_fingerprint(config, arch))
  keep = None if source == 'analysis' else config.checkpoints_to_keep
  ckpt = checkpoints.Checkpointer(directory, max_to_keep=keep)
  saved = ckpt.steps()
  if not saved:
    raise FileNotFoundError(f'{directory} holds no finished checkpoint; run '
                            f'--mode=records with {policy}.')
  if steps:
    missing = sorted(set(int(s) for s in steps) - set(saved))
    if missing:
      raise ValueError(f'Steps {missing} have no checkpoint in {directory}; '
                       f'saved: {saved}.')
    saved = sorted(set(int(s) for s in steps))
  return ckpt, saved


def _splits(split) -> tuple[str, ...]:
  out = (split,) if isinstance(split, str) else tuple(split)
  bad = [s for s in out if s not in records.SPLITS]
  if bad or not out:
    raise ValueError(f'split must be one of {records.SPLITS} or a tuple of '
                     f'them, got {split!r}.')
  return out


def score_checkpoints(workdir: str, config, fn: ScoreFn, name: str,
                      split='train', archs: Sequence[str] | None = None,
                      steps: Sequence[int] | None = None, *,
                      batch_size: int | None = None,
                      source: str | None = None) -> str:
  """Runs ``fn`` on every kept checkpoint of every member group; stores it.

  Args:
    workdir: where the results go (``checkpoint_probes/scores/{name}``);
      the checkpoints are read from ``config.checkpoint_probes
      .source_workdir`` when set, else from here.
    config: the study config (the one that recorded the checkpoints).
    fn: fn(model, variables, images, labels) -> [B], see the module doc.
    name: the score's name (a file name); one name, one function.
    split: 'train', 'test' or a tuple of both.
    archs: member groups (default: the study's architectures).
    steps: checkpoint steps (default: every kept one).
    batch_size: examples per batch (default
      config.checkpoint_probes.score_batch_size).
    source: 'analysis' or 'resume' (default config.checkpoint_probes.source).

  Returns:
    The score's directory; read it back with :func:`load_scores`.
  """
  cfg = config.checkpoint_probes
  splits = _splits(split)
  out = scores_dir(workdir, name)
  data = streaming.load(config)
  store = open_store(workdir, name, data)
  for arch in archs or config_fields.arch_list(config):
    ckpt, saved = kept_checkpoints(config, cfg.source_workdir or workdir,
                                   arch, source or cfg.source, steps)
    scorer = Scorer(config, data, arch, {name: fn},
                    batch_size or cfg.score_batch_size)
    t = scorer.trainer
    store.begin_arch(arch, t.members, t.spe, saved,
                     ensemble.study_fingerprint(config, arch))
    target = t.init_states()
    for k, step in enumerate(saved):
      states = ckpt.restore(step, target)
      for s in splits:
        store.write_chunk(arch, 'probe', s, k, step, scorer(states, s))
    store.finish_arch(arch)
  return out


