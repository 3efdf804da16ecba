"""Interoperability: your own training in, the formats peers read out.

numpy only: nothing here imports JAX, so a PyTorch (or any) training loop
can ``from easyhard_jax.interop import dynamics_log`` without pulling in an
accelerator runtime.

* :mod:`dynamics_log`: ``DynamicsLog``, a per-example logger any training
  loop can call; it writes the records contract (``records.py``), so
  ``--mode=analysis``, ``report`` and ``compare`` run on its workdir.
* :mod:`origin`: how a workdir's records were made (logged or trained
  here); the stages that retrain refuse a logged workdir.
* :mod:`per_example`: per-example statistics from logits (numpy).
* :mod:`importers`: dataset cartography's jsonl, AUM's CSV, data_diet's
  ``.npy`` and any per-example score file into the score store.
* :mod:`peer_exports`: cartography coordinates, AUM CSV and a cleanlab-ready
  file from a workdir.

See docs/interop.md for a walk-through.
"""
