"""Default study config: the fields every config has, at the paper's CIFAR scale.

Other configs import this one and override a few fields. Launch:

  python -m easyhard_jax.main --config=configs/default.py --workdir=/tmp/eh

Runtime and results: see the dataset configs (cifar10.py, digits.py, ...).
"""

import ml_collections

from easyhard_jax import analysis
from easyhard_jax.experiments import causes
from easyhard_jax.experiments import sweeps
from easyhard_jax.train import checkpoint_probe


def get_config() -> ml_collections.ConfigDict:
  """Returns the default study config."""
  c = ml_collections.ConfigDict()
  c.seed = 0                      # Root seed; member/epoch/step keys by fold_in.

  # Data.
  c.dataset = 'cifar10'           # digits | fashion_mnist | npz | any TFDS name.
  c.data_dir = ml_collections.config_dict.placeholder(str)  # TFDS data_dir.
  c.npz_path = ml_collections.config_dict.placeholder(str)  # For dataset='npz'.
  c.fashion_mnist_dir = '/usr/share/datasets/fashion-mnist'  # Debian files.
  c.image_size = ml_collections.config_dict.placeholder(int)  # Resize to NxN.
  c.num_classes = ml_collections.config_dict.placeholder(int)  # npz override.
  c.train_split = 'train'         # TFDS split names.
  c.test_split = 'test'
  c.max_train_examples = 0        # >0 keeps only the first N (stable index).
  c.augment = ml_collections.ConfigDict()
  c.augment.crop_padding = 4      # Random crop after zero padding (0 = off).
  c.augment.horizontal_flip = True
  # Streaming (data/streaming.py, data/loader.py): for datasets too large for
  # device memory, read TFDS array_record files with grain every step.
  c.stream = ml_collections.ConfigDict()
  c.stream.enabled = False
  c.stream.num_threads = 16       # Host threads decoding and cropping.
  c.stream.prefetch_batches = 2   # Steps read ahead of the device.
  c.stream.random_resized_crop = False  # Inception crop (needs image_size).
  c.stream.crop_fraction = 0.875  # Eval: centre crop of the shorter side.
  c.stream.stats_examples = 4096  # Train examples for the channel mean/std.
  c.stream.index_cache_dir = '~/.cache/easyhard_jax/index'  # Labels, ids.

  # The ensemble: every architecture trains `seeds_per_arch` members.
  c.archs = 'resnet18,vgg16,densenet_bc,cnn'  # Comma-separated model names.
  c.seeds_per_arch = 3
  c.width = 1.0                   # Channel multiplier for every model.
  c.model_kwargs = ml_collections.ConfigDict()  # {arch: {kwarg: value}}.
  c.member_strategy = 'auto'      # auto | unroll | vmap (see train/steps.py).
  c.mesh_shape = 'auto'           # auto (data axis = all devices) or 'M,D'.
  c.dtype = 'auto'                # auto (f32 on CPU, bf16 elsewhere) | float32 | bfloat16.

  # Optimisation.
  c.epochs = 30
  c.batch_size = 128
  c.eval_batch_size = 1024
  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = 'sgd'        # sgd | adam.
  c.optimizer.learning_rate = 0.1
  c.optimizer.momentum = 0.9
  c.optimizer.nesterov = True
  c.optimizer.weight_decay = 5e-4
  c.optimizer.schedule = 'cosine'  # cosine | constant | step.
  c.optimizer.warmup_epochs = 1.0
  c.optimizer.decay_epochs = (15, 25)  # For schedule='step'.
  c.optimizer.decay_factor = 0.1
  c.optimizer.grad_clip_norm = 0.0    # 0 = off.

  # Probe pass (eval mode, no augmentation, full train and test splits).
  c.probe = ml_collections.ConfigDict()
  c.probe.first_epoch_fractions = (0.25, 0.5, 0.75)
  c.probe.every_epochs = 1
  c.probe.at_init = False

  # Analysis stage (windows, easy/hard set rule, agreement, similarity).
  c.analysis = analysis.default_config()

  # Retraining sweeps (see easyhard_jax/experiments/sweeps.py): removal of
  # easy / hard / random examples, and compression by easiness vs random.
  c.removal = sweeps.default_sweep_config('remove')
  c.compression = sweeps.default_sweep_config('compress')
  # Cause probes (experiments/causes.py): random labels, batch size, Adam,
  # low-pass and grayscale inputs, compared with this study's easiness.
  c.causes = causes.default_causes_config()

  # --mode=probe_checkpoints: records and features from saved checkpoints.
  c.probe_checkpoints = checkpoint_probe.default_config()

  # Report (easyhard_jax/report): example grids per class.
  c.report = ml_collections.ConfigDict()
  c.report.examples_per_class = 8
  c.report.max_classes = 20

  # Stages that --mode=study runs (in this order); False switches one off.
  c.stages = ml_collections.ConfigDict()
  for name in ('record', 'analyze', 'remove', 'compress', 'probe_causes',
               'report'):
    c.stages[name] = True

  c.checkpoint_every_epochs = 1
  c.checkpoints_to_keep = 2
  # States kept for analysis after the run (GraNd, features, your own score):
  # 'window' = every probe inside analysis.window and the window's end;
  # 'all_probes'; 'none'; or a list of global steps.
  c.analysis_checkpoints = 'window'
  # Multi-process launches (easyhard_jax/distributed.py); auto-detected on
  # SLURM and Cloud TPU pods, explicit for a local multi-process run.
  c.distributed = ml_collections.ConfigDict()
  c.distributed.coordinator_address = ''  # 'HOST:PORT' ('' = auto / none).
  c.distributed.num_processes = 0
  c.distributed.process_id = -1

  # Persistent XLA cache: reruns and resumes skip compilation ('' = off).
  c.compilation_cache_dir = '~/.cache/easyhard_jax/xla'
  return c
