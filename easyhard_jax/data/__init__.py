"""Data sources (stable example index) and on-device batching/augmentation.

``data.load(config)`` gives the study's dataset: a sources.Dataset held in
memory, or a streaming.StreamedData when ``config.stream.enabled``; the
trainer reads either through its feed (loader.make_feed).
"""

from easyhard_jax.data.device_ops import AugmentConfig
from easyhard_jax.data.device_ops import augment
from easyhard_jax.data.device_ops import batch_indices
from easyhard_jax.data.device_ops import channel_stats
from easyhard_jax.data.device_ops import epoch_permutation
from easyhard_jax.data.device_ops import normalize
from easyhard_jax.data.sources import Dataset
from easyhard_jax.data.sources import load_dataset
from easyhard_jax.data.sources import SOURCES
from easyhard_jax.data.streaming import load
