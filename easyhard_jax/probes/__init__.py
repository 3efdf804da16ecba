"""Scoring after training, from kept checkpoints (imports train/, never back).

* ``checkpoint_scores``: any per-example function over a split, from the
  states a study keeps (``analysis_checkpoints/``), written as a score.
* ``grand``: GraNd (Paul et al., 2021), one member's gradient norms.
* ``checkpoint_probes``: the ``--mode=checkpoint_probes`` stage (records,
  penultimate features and GraNd from saved states into
  ``checkpoint_probes/``).
"""
