"""Analysis of per-example learning dynamics: jitted kernels over records.

Modules: ``scores`` (easiness and dynamics statistics, with
``SCORE_ORIENTATION`` and ``SCORE_SOURCE``: probe scores and the
training-pass scores of Toneva et al., Pleiss et al. and Swayamdipta et al.),
``score_kernels`` (their jitted kernels), ``sets`` (easy / hard masks,
class-balanced or global), ``agreement`` (overlap with chance levels for
either rule, Spearman, seed intervals), ``similarity`` (blocked
pairwise distances, colour, frequency, mean images), ``heldout_errors`` (test
easiness and the test errors of the final models), ``analyze``
(``run_analysis``, the analysis stage), ``score_store`` (the one score
artifact every later stage reads; numpy only), ``exports`` (keep-lists and
score files for other tools). Never imports ``easyhard_jax.train``.

The package imports nothing itself, so numpy-only readers (``score_store``,
the interop loggers) load without JAX.
"""
