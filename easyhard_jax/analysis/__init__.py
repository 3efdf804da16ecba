"""Analysis of per-example learning dynamics: jitted kernels over records.

Modules: ``scores`` (easiness and dynamics statistics, with
``SCORE_ORIENTATION`` and ``SCORE_SOURCE``: probe scores and the
training-pass scores of Toneva et al., Pleiss et al. and Swayamdipta et al.),
``score_kernels`` (their jitted kernels), ``sets`` (easy / hard masks,
class-balanced or global), ``agreement`` (overlap with chance levels for
either rule, Spearman, seed intervals), ``similarity`` (blocked
pairwise distances, colour, frequency, mean images), ``heldout_errors`` (test
easiness and the test errors of the final models), ``analyze``
(``run_analysis``, the analyze stage). Never imports ``easyhard_jax.train``.
"""

from easyhard_jax.analysis.scores import FUSED_SCORE_NAMES
from easyhard_jax.analysis.scores import SCORE_NAMES
from easyhard_jax.analysis.scores import SCORE_ORIENTATION
from easyhard_jax.analysis.scores import compute_scores
from easyhard_jax.analysis.scores import study_scores
from easyhard_jax.analysis.scores import window_mask
from easyhard_jax.analysis.sets import SetRule
from easyhard_jax.analysis.sets import easy_hard_masks
from easyhard_jax.analysis.analyze import run_analysis

__all__ = [
    'FUSED_SCORE_NAMES', 'SCORE_NAMES', 'SCORE_ORIENTATION', 'SetRule',
    'compute_scores', 'easy_hard_masks', 'run_analysis',
    'study_scores', 'window_mask',
]
