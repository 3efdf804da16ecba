"""Analysis of per-example learning dynamics: jitted kernels over records.

Modules: ``scores`` (easiness and dynamics statistics, with
``SCORE_ORIENTATION``), ``sets`` (easy / hard masks), ``agreement`` (overlap
with chance levels, Spearman, bootstrap over seeds), ``similarity`` (blocked
pairwise distances, colour, frequency, mean images), ``heldout_errors`` (test
easiness and the test errors of the final models), ``stage``
(``run_analysis``) and ``benchmark``. Never imports ``easyhard_jax.train``.
"""

from easyhard_jax.analysis.config import default_config
from easyhard_jax.analysis.scores import SCORE_NAMES
from easyhard_jax.analysis.scores import SCORE_ORIENTATION
from easyhard_jax.analysis.scores import compute_scores
from easyhard_jax.analysis.scores import window_mask
from easyhard_jax.analysis.sets import SetRule
from easyhard_jax.analysis.sets import easy_hard_masks
from easyhard_jax.analysis.stage import run_analysis

__all__ = [
    'SCORE_NAMES', 'SCORE_ORIENTATION', 'SetRule', 'compute_scores',
    'default_config', 'easy_hard_masks', 'run_analysis', 'window_mask',
]
