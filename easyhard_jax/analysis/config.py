"""Analysis knobs: :func:`default_config`, embedded by the study configs.

The main configs set ``config.analysis = analysis.default_config()`` and
override fields with ``--config.analysis.x=y``. Windows are ``(lo, hi)`` in
epochs and select the probes with ``lo < epoch <= hi`` (see
:func:`scores.window_mask`).
"""

from __future__ import annotations

import ml_collections


def default_config() -> ml_collections.ConfigDict:
  """Returns the analysis config (one comment per field).

  Returns:
    A ConfigDict with the windows, the easy/hard set rule and the settings of
    the agreement, similarity and test-error sections.
  """
  c = ml_collections.ConfigDict()
  c.source = 'probe'              # Records to analyse: probe (clean) | fused.
  # Easiness, EL2N and the early margin average over this window (epochs,
  # lo < e <= hi): the paper's "early in training". (0, 1] = every probe of
  # epoch 1.
  c.window = (0.0, 1.0)
  # Cumulative accuracy, first_learned, probe_forgetting_events and
  # never_learned use this window of probes; (0, inf) = every probe after
  # training starts. Use (-1, inf) to include a probe at initialisation.
  c.dynamics_window = (0.0, float('inf'))
  # Training-pass scores as their authors define them (forgetting_events,
  # aum, confidence, variability, correctness) from the fused records of
  # every epoch, when the workdir has them.
  c.fused_scores = True

  # Easy and hard sets (train and test split alike).
  c.sets = ml_collections.ConfigDict()
  c.sets.method = 'top_k'         # top_k | all_correct | threshold.
  c.sets.score = 'easiness'       # Any score with an easy end (see
                                  # scores.SCORE_ORIENTATION).
  c.sets.fraction = 0.1           # top_k with k == 0: k = round(fraction * N)
                                  # (per class: of each class's size).
  c.sets.k = 0                    # top_k: explicit k (per class if per_class).
  # top_k: k per class (class-balanced sets), the default: a global top-k
  # set can be a single class. The analysis and report show both rules;
  # this one defines is_easy / is_hard, agreement and visual similarity.
  c.sets.per_class = True
  c.sets.easy_threshold = 0.9     # threshold: easy iff oriented score >= this
  c.sets.hard_threshold = 0.1     # ... hard iff <= this (in the score's units).
  # top_k breaks ties of the primary score with the early margin (mean eval
  # margin over the window, same orientation), then by example index;
  # easiness is discrete, so ties are many.
  c.sets.tiebreak = 'early_margin'  # early_margin | none.

  # Cross-model agreement.
  c.agreement = ml_collections.ConfigDict()
  c.agreement.num_bootstrap = 200  # Resamples of members within each arch
                                  # (linear cost: ~15 s for 4 archs x 50k on
                                  # 2 CPU cores).
  c.agreement.ci_level = 0.95     # Two-sided percentile interval.
  c.agreement.seed = 0            # jax.random key for the bootstrap.

  # Visual similarity (needs images and/or features passed to the stage).
  c.similarity = ml_collections.ConfigDict()
  c.similarity.max_set_size = 5000  # Subsample sets above this (cost ~ K^2 D).
  c.similarity.per_class = True   # Also within each class (equal sizes there).
  c.similarity.block_size = 256   # Row block of the pairwise-distance kernel.
  c.similarity.hf_cutoff = 0.25   # High frequency: radius > this (cycles/px).
  c.similarity.hf_remove_mean = True  # Drop each image's DC before the FFT.
  c.similarity.seed = 1           # Key for random sets and subsampling.
  # Streamed datasets (ImageNet) are not loaded whole: pixel statistics and
  # class means use a stable random sample of this many images per split.
  c.similarity.max_streamed_images = 20000

  c.test = ml_collections.ConfigDict()
  c.test.enabled = True           # Analyse test records when they exist
                                  # (always the probe source).
  return c
