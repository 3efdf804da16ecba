"""ImageNet (ILSVRC-2012) compression by easiness, streamed: the paper's large run.

  # Once: prepare imagenet2012 for TFDS (manual download; see README, "At scale").
  python -m easyhard_jax.main --config=configs/imagenet.py \
      --workdir=gs://BUCKET/eh_imagenet --config.data_dir=/shared/tfds

Runs on a GPU node or a TPU pod (launch/slurm_gpu.sbatch, launch/tpu_pod.sh).
Images stay in TFDS's array_record files and stream through grain on host
threads (Inception crop to 224 px, horizontal flip on the device); labels and
ids are indexed once and cached. Records: ResNet-18 and ResNet-50 (ImageNet
stem), 16 epochs, probed four times in the first epoch and after every epoch
on the 1.28M train and 50k validation images; easiness over epochs (0, 2].
The compression stage retrains ResNet-18 on 90/80/70% of the train set,
dropping the easiest examples or a random subset.

Runtime: not measured here (no accelerator was available when this was
written); the records stage is 2 x 16 epochs of ImageNet plus probes, about
the cost of one 45-epoch ResNet-50 run. The global batch of 1024 is split over
the data axis: use a node of 8 GPUs or a pod slice (ResNet-50 at 1024 does
not fit one GPU in bf16). Expected: roughly 67% (ResNet-18) and 71%
(ResNet-50) top-1 after 16 epochs; the paper reports that dropping the easiest
examples costs markedly less accuracy than dropping a random subset of that
size.
"""

from configs import default


def get_config():
  """imagenet2012 at 224 px: ResNet-18/50 records, then a compression sweep."""
  c = default.get_config()
  c.dataset = 'imagenet2012'
  c.train_split = 'train'
  c.test_split = 'validation'
  c.image_size = 224
  c.stream.enabled = True
  c.stream.random_resized_crop = True
  c.stream.num_threads = 32
  c.stream.prefetch_batches = 4
  c.augment.crop_padding = 0
  c.augment.horizontal_flip = True

  c.archs = 'resnet18,resnet50'
  c.seeds_per_arch = 1
  c.model_kwargs = {'resnet18': {'stem': 'imagenet'},
                    'resnet50': {'stem': 'imagenet'}}
  c.epochs = 16
  c.batch_size = 1024
  c.eval_batch_size = 1024
  c.optimizer.learning_rate = 0.4  # 0.1 per 256 examples (Goyal et al.).
  c.optimizer.weight_decay = 1e-4
  c.optimizer.warmup_epochs = 2.0
  c.optimizer.schedule = 'cosine'
  c.probe.first_epoch_fractions = (0.25, 0.5, 0.75)
  c.probe.every_epochs = 1
  c.analysis.window = (0.0, 2.0)
  c.report.max_classes = 20

  c.compression.archs = 'resnet18'
  c.compression.seeds = 1
  c.compression.epochs = 16
  c.compression.members_per_program = 1
  c.compression.fractions = (0.7, 0.8, 0.9)  # Share of the train set kept.
  c.compression.strategies = ('drop_easiest', 'random')
  c.compression.scores = ('easiness',)
  c.stages.removal = False
  c.stages.causes = False  # Needs the training set in memory.
  return c
