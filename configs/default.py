"""Default study config: the fields every config has, at the paper's CIFAR scale.

Other configs import this one and override a few fields. Launch:

  python -m easyhard_jax.main --config=configs/default.py --workdir=/tmp/eh

Runtime and results: see the dataset configs (cifar10.py, digits.py, ...).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  """Returns the default study config."""
  c = ml_collections.ConfigDict()
  c.seed = 0                      # Root seed; member/epoch/step keys by fold_in.

  # Data.
  c.dataset = 'cifar10'           # digits | fashion_mnist | npz | any TFDS name.
  c.data_dir = ml_collections.config_dict.placeholder(str)  # TFDS data_dir.
  c.npz_path = ml_collections.config_dict.placeholder(str)  # For dataset='npz'.
  c.fashion_mnist_dir = '/usr/share/datasets/fashion-mnist'  # Debian files.
  # CIFAR-10 offline: a folder with the binary batches (data_batch_1..5.bin,
  # test_batch.bin; launch/fetch_cifar10.sh), read into TFDS's order. Empty:
  # TFDS. cifar10_verify checks each file's published md5.
  c.cifar10_dir = ''
  c.cifar10_verify = True
  c.image_size = ml_collections.config_dict.placeholder(int)  # Resize to NxN.
  c.num_classes = ml_collections.config_dict.placeholder(int)  # npz override.
  c.train_split = 'train'         # TFDS split names.
  c.test_split = 'test'
  c.max_train_examples = 0        # >0 keeps only the first N (stable index).
  # Synthetic label errors (data/sources.py flip_labels): this fraction of
  # the (kept) train labels flipped to a uniformly random other class,
  # deterministically by seed; device-resident data only. With fraction > 0
  # and analysis.known_noisy == '', the analysis scores how well each score
  # finds the flipped examples.
  # Given train labels from a file, 'PATH' or 'PATH:KEY' (.npy, .npz, .csv,
  # or a numpy-only torch .pt such as CIFAR-10N's CIFAR-10_human.pt with
  # KEY aggre_label / worse_label / random_label1); its rows are in the
  # dataset's 'index' order or its 'original' order (CIFAR binaries, CIFAR-N).
  # The examples whose label differs are the known label errors.
  c.train_labels = ''
  c.train_labels_order = 'index'
  c.label_noise = ml_collections.ConfigDict()
  c.label_noise.fraction = 0.0
  c.label_noise.seed = 0
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
  a = c.analysis = ml_collections.ConfigDict()
  a.source = 'probe'              # Records to analyse: probe (clean) | fused.
  # Easiness, EL2N and the early margin average over this window (epochs,
  # lo < e <= hi): the paper's "early in training". (0, 1] = every probe of
  # epoch 1.
  a.window = (0.0, 1.0)
  # Cumulative accuracy, first_learned, probe_forgetting_events and
  # never_learned use this window of probes; (0, inf) = every probe after
  # training starts. Use (-1, inf) to include a probe at initialisation.
  a.dynamics_window = (0.0, float('inf'))
  # Training-pass scores as their authors define them (forgetting_events,
  # aum, confidence, variability, correctness) from the fused records of
  # every epoch, when the workdir has them.
  a.fused_scores = True

  # Easy and hard sets (train and test split alike).
  a.sets = ml_collections.ConfigDict()
  a.sets.method = 'top_k'         # top_k | all_correct | threshold.
  a.sets.score = 'easiness'       # Any score with an easy end (see
                                  # scores.SCORE_ORIENTATION).
  a.sets.fraction = 0.1           # top_k with k == 0: k = round(fraction * N)
                                  # (per class: of each class's size).
  a.sets.k = 0                    # top_k: explicit k (per class if per_class).
  # top_k: k per class (class-balanced sets), the default: a global top-k
  # set can be a single class. The analysis and report show both rules;
  # this one defines is_easy / is_hard, agreement and visual similarity.
  a.sets.per_class = True
  a.sets.easy_threshold = 0.9     # threshold: easy iff oriented score >= this
  a.sets.hard_threshold = 0.1     # ... hard iff <= this (in the score's units).
  # top_k breaks ties of the primary score with the early margin (mean eval
  # margin over the window, same orientation), then by example index;
  # easiness is discrete, so ties are many.
  a.sets.tiebreak = 'early_margin'  # early_margin | none.

  # Cross-model agreement.
  a.agreement = ml_collections.ConfigDict()
  # Arch-pair intervals over seeds at the ensemble's own size: leave one
  # seed out (stratified jackknife), one extra statistic per member.
  a.agreement.intervals = True
  a.agreement.ci_level = 0.95     # Two-sided level of those intervals.
  a.agreement.seed = 0            # jax.random key (seed-ceiling groups).

  # Visual similarity (needs images and/or features passed to the stage).
  a.similarity = ml_collections.ConfigDict()
  a.similarity.max_set_size = 5000  # Subsample sets above this (cost ~ K^2 D).
  a.similarity.per_class = True   # Also within each class (equal sizes there).
  a.similarity.block_size = 256   # Row block of the pairwise-distance kernel.
  a.similarity.hf_cutoff = 0.25   # High frequency: radius > this (cycles/px).
  a.similarity.hf_remove_mean = True  # Drop each image's DC before the FFT.
  a.similarity.seed = 1           # Key for random sets and subsampling.
  # Streamed datasets (ImageNet) are not loaded whole: pixel statistics and
  # class means use a stable random sample of this many images per split.
  a.similarity.max_streamed_images = 20000

  a.test = ml_collections.ConfigDict()
  a.test.enabled = True           # Analyse test records when they exist
                                  # (always the probe source).

  # Suspected label errors (analysis/label_issues.py): the class the members
  # agree on instead of the given label, from the predictions before a
  # network memorises a wrong label.
  a.label_issues = ml_collections.ConfigDict()
  # Probes (epochs, lo < e <= hi) whose predictions vote; () = every probe
  # after the first epoch and the lr warm-up (early class bias reads as
  # label error), or a.window in a run of one epoch.
  a.label_issues.window = ()
  # 'class_threshold': a prediction of class k votes only where p(k) reaches
  # the mean p(k) of the examples labelled k (confident learning); 'none'.
  a.label_issues.calibration = 'class_threshold'
  # Ranking: 'p_given' = -mean p(given label) over the window's pairs (best
  # measured: docs/label_issues.md); 'agreed_margin' = mean p(agreed class)
  # on the pairs voting for it minus p(given).
  a.label_issues.score = 'p_given'
  a.label_issues.top_k = 64       # Suspects shown in the report.
  # A .npy / .txt / .csv of train example indices known to be mislabelled
  # ('' = none; with label_noise.fraction > 0: the flipped ones). The
  # analysis reports every score's AUROC and precision at k for them.
  a.known_noisy = ''

  # Retraining sweeps (see easyhard_jax/experiments/sweeps.py): removal of
  # easy / hard / random examples, and compression by easiness vs random.
  for name in ('removal', 'compression'):
    w = c[name] = ml_collections.ConfigDict()
    w.archs = 'study'            # 'study' = config.archs, or comma-separated.
    w.seeds = 3                  # Retraining seeds per (fraction, strategy).
    w.epochs = 30                # Epochs of every retraining run.
    w.budget = 'epochs'          # epochs (as the paper) | steps (as full data).
    w.members_per_program = 6    # Members compiled into one program.
  c.removal.fractions = (0.1, 0.3, 0.5)
  c.removal.strategies = ('easiest', 'hardest', 'random', 'easiest_balanced',
                          'hardest_balanced', 'random_balanced')
  c.removal.scores = ('easiness',)
  c.compression.fractions = (0.1, 0.3, 0.5, 0.7)
  c.compression.strategies = ('drop_easiest', 'stratified', 'random')
  c.compression.scores = ('easiness', 'el2n', 'forgetting_events')
  # Cause probes (experiments/causes.py): random labels, batch size, Adam,
  # low-pass and grayscale inputs, compared with this study's easiness.
  k = c.causes = ml_collections.ConfigDict()
  k.variants = ('random_labels', 'large_batch', 'adam', 'lowpass',
                'grayscale')      # Also: full_batch (small datasets).
  k.archs = 'study'               # Subset of config.archs (>= 2 for agreement).
  k.seeds = 2                     # Seeds per architecture in each variant.
  k.epochs = 30                   # Epochs of each variant's training.
  k.label_seed = 0                # random_labels permutation.
  k.large_batch_size = 1024
  k.full_batch_epochs = 200
  k.adam_learning_rate = 1e-3
  k.lowpass_sigma = 1.0           # Gaussian blur, pixels.
  # The reseed control (always trained; see noise_floor.py): members per
  # architecture, > seeds; 0 = the study's seeds_per_arch (at least seeds+1).
  k.control_seeds = 0
  k.max_subsets = 64              # Control member-subsets evaluated, at most.
  # Two-sided level of "departs from the control" (a t test: see
  # noise_floor.py).
  k.departure_level = 0.95

  # --mode=heldout (experiments/heldout.py, docs/heldout.md): K members per
  # ratio and architecture, each on its own uniformly random subset of
  # round(r N) examples; their predictions on the examples they missed give
  # consistency (C-score) and memorization estimates, the ground truth the
  # report judges every proxy score against. Each example is held out by
  # K (1 - r) members per ratio on average. In the study when
  # stages.heldout is True (off here: at CIFAR scale it is a retraining of
  # K x len(ratios) members per architecture).
  h = c.heldout = ml_collections.ConfigDict()
  h.archs = 'study'               # 'study' = config.archs, or comma-separated.
  h.members = 16                  # K: members per ratio and architecture.
  h.ratios = (0.5, 0.7, 0.9)      # Subset ratios r (Jiang et al.: 0.1..0.9).
  h.epochs = 30                   # Epochs of every member.
  h.members_per_program = 6       # Members compiled into one program.
  h.along_training = False        # Also probe along training (curves).
  h.hard_tail_fractions = (0.05, 0.1)  # Hardest-tail AUROC / top-k sizes.

  # --mode=checkpoint_probes: records, penultimate features and GraNd from
  # the kept checkpoints (probes/checkpoint_probes.py, probes/checkpoint_scores.py).
  p = c.checkpoint_probes = ml_collections.ConfigDict()
  # 'analysis' = the states kept for analysis (analysis_checkpoints/: the
  # easiness window's probes and its end); 'resume' = the rolling resume
  # checkpoints (checkpoints/: the last epoch ends).
  p.source = 'analysis'
  p.source_workdir = ''           # '' = this workdir; or another study's.
  p.archs = 'study'               # 'study' = config.archs, or comma-separated.
  p.steps = ()                    # () = every saved step; or global steps.
  p.splits = ('train', 'test')    # Probe records (and features) on these.
  p.features = True               # Also save penultimate features (float16).
  p.grand = True                  # GraNd per member (probes/grand.py) ...
  p.grand_splits = ('train',)     # ... on these splits.
  # Examples per batch of GraNd and of checkpoint_scores.score_checkpoints: a
  # per-example gradient holds one parameter-sized vector per example.
  p.score_batch_size = 64

  # Report (easyhard_jax/report): example grids per class.
  c.report = ml_collections.ConfigDict()
  c.report.examples_per_class = 8
  c.report.max_classes = 20

  # --mode=compare (analysis/compare.py): the analysis scores
  # against a published per-example score (e.g. C-scores); writes
  # WORKDIR/compare and a report section.
  c.reference = ml_collections.ConfigDict()
  c.reference.path = ''           # .npz or .csv of the score ('' = none).
  c.reference.key = 'score'       # Its npz key or CSV column.
  c.reference.orientation = 'higher_is_easier'  # | higher_is_harder.
  c.reference.split = 'train'     # The split it scores: train | test.
  # Row order: 'index' (this project's example index = TFDS's stored order
  # for TFDS datasets); 'tfds_id' (an id column: the records' ids, or
  # tf.data tfds_ids 'cifar10-train.array_record-00000-of-00001__123');
  # 'original' (the keys TFDS's builder hashed, for CIFAR / MNIST the
  # original file order, e.g. the published C-score files).
  c.reference.order = 'index'
  c.reference.tfds_id_column = 'tfds_id'  # order='tfds_id': key or column.
  # Key or column of the reference's own labels ('' = none): after the
  # mapping they must equal the records' labels (checks the order).
  c.reference.label_key = ''
  c.reference.hard_tail_fractions = (0.05, 0.1)  # AUROC and top-k sizes.
  # Non-saturated part: reference strictly between these quantiles of
  # itself; (0, 1) = strictly inside its min and max.
  c.reference.nonsaturated_band = (0.0, 1.0)

  # Stages that --mode=study runs (in this order); False switches one off.
  c.stages = ml_collections.ConfigDict()
  for name in ('records', 'analysis', 'removal', 'compression', 'causes',
               'report'):
    c.stages[name] = True
  c.stages.heldout = False        # See c.heldout.

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
