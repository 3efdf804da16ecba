"""GraNd: the norm of each example's loss gradient (Paul et al., 2021).

"Deep Learning on a Data Diet" scores an example by the expected L2 norm,
over seeds, of the gradient of its loss with respect to all parameters, at an
early checkpoint. Here a *seed* is a member: :func:`grand_fn` gives one
member's norms, the after-the-fact pass
(easyhard_jax/probes/checkpoint_scores.py) runs it for every member of every kept analysis checkpoint, and
:func:`expected_grand` averages over members. Raw norms differ between
architectures, so the analysis takes that expectation within each
architecture (``grand/<arch>``) and combines architectures by rank
(score_store.window_score_by_arch, analysis.scores.combine_by_rank).

Per-example gradients are ``jax.vmap`` of ``jax.grad`` of the one-example
loss over the examples of a batch, in one jitted program per batch (sharded
like the probe pass: the batch over the mesh's data axis, members as the
study's member strategy runs them).

Eval mode: the network runs with ``train=False``, so BatchNorm normalizes
with its running statistics (the checkpoint's ``batch_stats``, held fixed),
not with the batch's. An example's gradient therefore depends on that
example and the parameters only, never on the other examples of its batch
or on the batch size, and the statistics are not differentiated. This is
data_diet's convention: its ``get_grad_norm_fn`` (data_diet/scores.py)
differentiates ``get_apply_fn_test`` (data_diet/models.py: ``train=False,
mutable=False``) with respect to the parameters only, cross-entropy loss
without weight decay, and flattens every parameter's gradient into one
vector before the norm. The loss here is the same softmax cross-entropy
(float32) as in the probe records.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from easyhard_jax.train import steps as steps_lib

NAME = 'grand'


def example_loss(model, variables: Mapping[str, Any], params: Any,
                 image: jax.Array, label: jax.Array) -> jax.Array:
  """Softmax cross-entropy of one example (eval mode), as a scalar.

  Args:
    model: the flax module.
    variables: {'params': ..., 'batch_stats': ...} of one member; its
      ``batch_stats`` (running statistics) are used and held fixed.
    params: the parameters to differentiate (replace variables['params']).
    image: one normalized image [H, W, C] (model input dtype).
    label: int32 scalar.
  """
  logits = model.apply({**variables, 'params': params}, image[None],
                       train=False)
  return steps_lib.per_example_stats(logits, label[None]).loss[0]


def grand_fn(model, variables: Mapping[str, Any], images: jax.Array,
             labels: jax.Array) -> jax.Array:
  """Per-example loss-gradient L2 norms of one member: float32 [B].

  A per-example function of the after-the-fact API (see
  checkpoint_scores.score_checkpoints): ``fn(model, variables, images, labels)``
  with normalized images [B, H, W, C] and int32 labels [B].
  """
  grad = jax.grad(lambda p, x, y: example_loss(model, variables, p, x, y))
  grads = jax.vmap(grad, in_axes=(None, 0, 0))(variables['params'], images,
                                               labels)
  b = images.shape[0]
  # Squares summed per leaf, then across leaves: the flattened vector's norm.
  sq = sum(jnp.sum(jnp.square(g.astype(jnp.float32)).reshape(b, -1), axis=1)
           for g in jax.tree.leaves(grads))
  return jnp.sqrt(sq)


def expected_grand(scores: np.ndarray) -> np.ndarray:
  """GraNd proper: the mean over members (seeds) of per-member norms.

  Args:
    scores: [members, ..., examples] per-member gradient norms (as
      checkpoint_scores.load_scores returns them: [M, checkpoints, N]).

  Returns:
    float32 [..., examples]; NaN where every member is NaN.
  """
  return np.nanmean(np.asarray(scores, np.float32), axis=0)


def score_grand(workdir: str, config, split='train', archs=None,
                steps=None) -> str:
  """GraNd of every kept checkpoint, written to the after-the-fact store.

  A thin wrapper of checkpoint_scores.score_checkpoints with :func:`grand_fn`
  under the name ``'grand'``; ``--mode=checkpoint_probes`` does the same
  (with config.checkpoint_probes.grand). Returns the store's directory.
  """
  # pylint: disable-next=g-import-not-at-top
  from easyhard_jax.probes import checkpoint_scores
  return checkpoint_scores.score_checkpoints(workdir, config, grand_fn, NAME,
                                          split=split, archs=archs,
                                          steps=steps)
