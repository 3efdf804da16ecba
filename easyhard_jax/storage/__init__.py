"""The workdir's files, on a local disk or an object store (etils.epath).

* ``files``: atomic writes, commit markers, paths that work on ``gs://``.
* ``lease``: the workdir's single-writer lease (no ``flock`` needed).
* ``records``: per-example records (correctness, loss, margin) per member.
* ``record_manifest``: which records a workdir holds, and their shapes.
* ``metrics_writer``: the append-only metrics.jsonl and summaries.

Nothing here imports training, analysis or the report.
"""
