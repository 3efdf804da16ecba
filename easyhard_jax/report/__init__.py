"""The study report: figures, a self-contained HTML page and a summary.

``build_report(config, workdir, train_images=..., test_images=...)`` writes

    WORKDIR/report/index.html     one page, no external resources: CSS inline,
                                  every figure a base64 PNG data URI
    WORKDIR/report/summary.md     headline numbers and which sections ran
    WORKDIR/report/figures/*.png  the same figures as files

from what the stages left in the workdir: ``analysis/`` (analysis.json,
scores_{train,test}.csv, mean_images.npz), ``metrics.jsonl``, the probe
records, ``config.json`` and ``timings.json`` (``{"stage": seconds}``). A
section whose inputs are missing says "not run" and why; one that fails says
"error" with the exception; neither stops the rest of the report.

Later stages (``removal``, ``compression``, ``causes``) are shown when
``WORKDIR/<stage>/results.json`` exists. The cause probes' own results
(``experiments/causes.py``: per probe the overlap of its easy and hard sets
with the study's as a ratio to chance, the easiness Spearman, test accuracy)
are drawn as one grouped-bar figure with a table and headline lines in
``summary.md``. Any other stage's file follows this contract::

    {
      "curves": [                     # one line per condition, >= 1
        {"name": "remove hardest",    # legend label
         "x": [0.1, 0.2, ...],        # e.g. fraction removed
         "mean": [0.91, 0.88, ...],   # same length as x; null = gap
         "std": [0.01, 0.02, ...]}    # optional; error bars (over seeds)
      ],
      "reference": 0.95,              # float or null: dashed horizontal line
      "reference_label": "full data", # optional legend label of the line
      "xlabel": "fraction removed",
      "ylabel": "test accuracy",
      "title": "...",                 # optional axes title
      "caption": "...",               # optional text under the figure
      "description": "..."            # optional: replaces the section's
                                      # one-sentence explanation
    }

A stage with several figures writes ``{"panels": [spec, spec, ...]}`` (each
spec as above) and may put ``"description"`` at the top level. Any other keys
are kept and shown in the page's raw-JSON block.

The module never imports :mod:`easyhard_jax.train`; pass the images in
(``easyhard_jax.data.sources.load_dataset(config).train_images``).
"""

from easyhard_jax.report.build import build_report
from easyhard_jax.report.build import read_metrics
from easyhard_jax.report.build import read_scores

__all__ = ['build_report', 'read_metrics', 'read_scores']
