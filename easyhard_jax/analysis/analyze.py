"""The analyze stage's analysis: records in, ``WORKDIR/analysis`` out.

:func:`run_analysis` reads the records of a study (``records.load``) and
writes, atomically:

* ``analysis.json``: set sizes (overall and per class), score summaries and
  their rank correlations, member and architecture agreement (overlap of easy
  and hard sets with chance levels and ratios, Spearman of easiness,
  leave-one-seed-out intervals), visual similarity, colour and frequency
  statistics (when images or features are given), all under the configured
  set rule (class-balanced top-k by default); ``other_rule`` repeats the
  sets, agreement (without intervals) and similarity under the other rule
  (global top-k), and the test-error section. Each part is a dataclass of
  analysis/results.py, registered by its key; the file is written from
  them (``results.Analysis``). The probe scores come from
  the probe records, the training-pass scores (Toneva forgetting events,
  AUM, cartography) from the fused records (``scores.SCORE_SOURCE``).
* ``scores_train.npz`` / ``scores_test.npz``: the one score artifact
  (``score_store.write_analysis_scores``), every score as computed (float32)
  in the split's stable index order: example_index, tfds_id ('' where
  unknown), label, every score, per-architecture easiness (and GraNd),
  is_easy, is_hard. The exports, the removal and compression masks and
  --mode=compare read it (``score_store.load_analysis_scores``);
  ``scores_{split}.csv`` beside it is the same table as text for people.
* ``mean_images.npz``: per-class mean images of the easy, hard and all sets
  (when images are given).
* ``label_issues_{split}.csv``: suspected label errors, most suspect first
  (analysis/label_issues.py; records with predictions only). With known
  label errors (``config.analysis.known_noisy`` or ``config.label_noise``)
  ``analysis.json['label_noise']`` holds every score's AUROC and precision
  at k for them.

NaN values appear as ``null`` in the JSON and ``nan`` in the CSVs; infinite
ones as the strings ``"inf"`` / ``"-inf"`` in the JSON.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from easyhard_jax import config_fields
from easyhard_jax.storage import files
from easyhard_jax.storage import records as records_lib
from easyhard_jax.analysis import score_store
from easyhard_jax.analysis import agreement as agreement_lib
from easyhard_jax.analysis import feature_similarity
from easyhard_jax.analysis import heldout_errors
from easyhard_jax.analysis import label_issues
from easyhard_jax.analysis import label_noise
from easyhard_jax.analysis import results as results_lib
from easyhard_jax.analysis import scores as scores_lib
from easyhard_jax.analysis import sets as sets_lib
from easyhard_jax.analysis import similarity as similarity_lib


def _write_scores(workdir: str, rec: Any, example: Mapping[str, np.ndarray],
                  easy: np.ndarray, hard: np.ndarray,
                  archs: list[str]) -> None:
  """Writes the split's score artifact (npz, and its CSV for people)."""
  names = list(scores_lib.SCORE_NAMES) + [f'easiness/{a}' for a in archs]
  names += [k for k in example if k.startswith('grand/')]
  table = score_store.score_table(rec.example_ids, rec.tfds_ids, rec.labels,
                                  example, names, easy, hard)
  score_store.write_analysis_scores(workdir, rec.split, table)


def _score_summary(example: Mapping[str, np.ndarray]
                   ) -> dict[str, results_lib.ScoreStats | None]:
  out = {}
  for name in scores_lib.SCORE_NAMES:
    if name not in example:
      out[name] = None
      continue
    v = np.asarray(example[name], np.float64)
    fin = v[np.isfinite(v)]
    out[name] = None if not fin.size else results_lib.ScoreStats(
        mean=float(fin.mean()), std=float(fin.std()),
        min=float(fin.min()), max=float(fin.max()))
  return out


def _score_correlation(example: Mapping[str, np.ndarray]
                       ) -> results_lib.ScoreCorrelation | results_lib.Skipped:
  """Spearman between scores, each oriented high = easy (variability raw)."""
  names, rows = [], []
  for name in scores_lib.SCORE_NAMES:
    if name not in example:
      continue
    v = np.asarray(example[name], np.float32)
    if not np.all(np.isfinite(v)):
      continue
    o = scores_lib.orientation(name)
    names.append(name)
    rows.append(v if o == scores_lib.NEITHER else
                scores_lib.easier_key(v, name))
  if len(rows) < 2:
    return results_lib.Skipped('fewer than two finite scores')
  return results_lib.ScoreCorrelation(
      scores=names, oriented='higher_is_easier (variability raw)',
      spearman=np.asarray(agreement_lib.spearman_matrix(
          jnp.asarray(np.stack(rows)))))


def _split_sets(sc: dict[str, Any], labels: np.ndarray,
                rule: sets_lib.SetRule,
                num_classes: int
                ) -> tuple[np.ndarray, np.ndarray, results_lib.SetInfo]:
  score = sc['example'][rule.score]
  sets_lib.check_finite(score, rule.score)
  k = rule.resolve_k(labels, num_classes) if rule.method == 'top_k' else None
  easy, hard = sets_lib.easy_hard_masks(
      rule, score, labels=jnp.asarray(labels, jnp.int32),
      num_classes=num_classes, k=k, tiebreak=sc['example']['early_margin'])
  easy, hard = np.asarray(easy), np.asarray(hard)
  info = {'rule': rule.method, 'score': rule.score,
          'class_rule': rule.name,
          'k': None if k is None else np.asarray(k),
          'easy_size': int(easy.sum()), 'hard_size': int(hard.sum()),
          'both': int((easy & hard).sum()),
          'easy_per_class': np.bincount(labels[easy], minlength=num_classes),
          'hard_per_class': np.bincount(labels[hard], minlength=num_classes),
          'class_sizes': np.bincount(labels, minlength=num_classes)}
  for name in ('easy', 'hard'):
    per, size = info[f'{name}_per_class'], info[f'{name}_size']
    # The share of the set in its largest class: 1.0 = one class only.
    info[f'{name}_largest_class'] = int(np.argmax(per))
    info[f'{name}_largest_class_share'] = (float(per.max() / size) if size
                                           else None)
  return easy, hard, results_lib.SetInfo(**info)


def _records_info(rec: Any, sc: dict[str, Any]) -> results_lib.RecordsInfo:
  return results_lib.RecordsInfo(
      members=rec.num_members, probes=int(rec.correct.shape[1]),
      fused_epochs=sc.get('fused_epochs'),
      examples=int(rec.correct.shape[2]), archs=sc['archs'],
      member_names=[m.get('name') for m in rec.members],
      probe_epochs=np.asarray(rec.probe_epochs),
      window_probe_epochs=np.asarray(rec.probe_epochs)[sc['window_mask']],
      dynamics_probe_epochs=np.asarray(rec.probe_epochs)[
          sc['dynamics_mask']])


def _pixel_sample(images: Any, cap: int, seed: int):
  """(images as numpy, sampled row indices or None).

  Arrays are used whole. Streamed images (data/streaming.LazyImages) above
  ``cap`` rows are decoded for a stable random sample of ``cap`` rows only.
  """
  if isinstance(images, np.ndarray) or images.shape[0] <= cap:
    return np.asarray(images), None
  rows = np.sort(np.random.default_rng(seed).choice(images.shape[0], cap,
                                                    replace=False))
  logging.info('Pixel statistics on %d of %d streamed images.', cap,
               images.shape[0])
  return images[rows], rows


def _similarity(cfg: Any, labels: np.ndarray, easy: np.ndarray,
                hard: np.ndarray, images: Any, features: Any,
                num_classes: int, class_balanced: bool,
                with_means: bool = True, window_features: Any = None
                ) -> tuple[results_lib.Similarity | results_lib.Skipped,
                           dict[str, Any]]:
  s = cfg.similarity
  kw = dict(seed=s.seed, max_set_size=s.max_set_size, per_class=s.per_class,
            block_size=s.block_size, class_balanced=class_balanced)
  out: dict[str, Any] = {'class_balanced': bool(class_balanced)}
  means: dict[str, Any] = {}
  every_example = labels, easy, hard  # Features cover all, pixels a sample.
  if images is None and features is None and window_features is None:
    return (results_lib.Skipped('no images or features passed to '
                                'run_analysis'), means)
  if images is not None:
    if images.shape[0] != labels.shape[0]:
      raise ValueError(f'train_images has {images.shape[0]} rows but the '
                       f'records have {labels.shape[0]} examples.')
    images, rows = _pixel_sample(images, s.max_streamed_images, s.seed)
    if rows is not None:
      out['pixel_sample'] = {'rows': int(rows.size),
                             'of': int(labels.shape[0])}
      labels, easy, hard = labels[rows], easy[rows], hard[rows]
    out['pixels'] = similarity_lib.set_distances(images, easy, hard, labels,
                                                 **kw)
    rng = np.random.default_rng(s.seed)
    if class_balanced:
      # A random set with the easy set's class composition: colour or
      # frequency differences then cannot come from class alone.
      rand = sets_lib.class_composition_sample(
          rng, labels, np.bincount(labels[easy], minlength=num_classes))
    else:
      sizes = [int(easy.sum()), int(hard.sum())]
      k = max(min(sizes) if min(sizes) > 0 else max(sizes), 1)
      rand = np.zeros(labels.shape, bool)  # A random set the size of others.
      rand[rng.choice(labels.size, size=k, replace=False)] = True
    out.update(similarity_lib.colour_and_frequency(
        images, {'easy': easy, 'hard': hard, 'random': rand,
                 'all': np.ones_like(easy)},
        hf_cutoff=s.hf_cutoff, hf_remove_mean=s.hf_remove_mean))
    for name, mask in (('easy', easy), ('hard', hard),
                       ('all', np.ones_like(easy))) if with_means else ():
      m, c = similarity_lib.class_mean_images(images, labels, mask,
                                              num_classes)
      means[f'{name}_mean'], means[f'{name}_count'] = m, c
  if features is not None:
    labels, easy, hard = every_example
    feats = features if isinstance(features, Mapping) else {
        'features': features}
    out['features'] = {
        name: similarity_lib.set_distances(np.asarray(f), easy, hard, labels,
                                           **kw)
        for name, f in feats.items()}
  if window_features is not None:  # Per member, averaged (all archs).
    labels, easy, hard = every_example
    out.setdefault('features', {})[
        f'penultimate_step{window_features.step}'] = (
            feature_similarity.feature_set_distances(
                window_features.features, easy, hard, labels, **kw))
  return results_lib.Similarity(**out), means


def _other_rule(cfg: Any, rule: sets_lib.SetRule, sc: dict[str, Any],
                train: Any, labels: np.ndarray, num_classes: int,
                train_images: Any, features: Any,
                window_features: Any = None
                ) -> results_lib.OtherRule | results_lib.Skipped:
  """Sets, agreement and similarity under the other class rule (top_k)."""
  other = rule.other()
  if other is None:
    return results_lib.Skipped(f'sets.method={rule.method!r} has no class '
                               'rule')
  easy, hard, info = _split_sets(sc, labels, other, num_classes)
  agree = agreement_lib.agreement_report(
      sc['member'], [m.get('name', str(i)) for i, m in enumerate(
          train.members)], sc['group_ids'], sc['archs'], other, labels,
      num_classes, jax.random.key(cfg.agreement.seed), intervals=False)
  sim, _ = _similarity(cfg, labels, easy, hard, train_images, features,
                       num_classes, other.name == 'class_balanced',
                       with_means=False, window_features=window_features)
  return results_lib.OtherRule(
      class_rule=other.name, sets=info,
      agreement=results_lib.Agreement.from_json(agree, strict=True),
      similarity=sim)


def _add_label_issues(sc: dict[str, Any], rec: Any, cfg: Any,
                      num_classes: int) -> dict[str, np.ndarray] | None:
  """Adds the ``label_issue`` score to ``sc``; its statistics, or None."""
  li = label_issues.from_records(rec, cfg, num_classes)
  if li is None:
    logging.info('No predictions in the %s records: no label-issue score.',
                 rec.split)
  else:
    sc['example'][label_issues.NAME] = li['score']
  return li


def _label_issue_outputs(config: Any, out_dir: str,
                         issues: Mapping[str, Any], recs: Mapping[str, Any],
                         example: Mapping[str, np.ndarray]
                         ) -> tuple[results_lib.LabelIssues,
                                    results_lib.LabelNoise |
                                    results_lib.Skipped]:
  """Writes label_issues_{split}.csv; (label_issues, label_noise) parts."""
  cfg = config.analysis
  info: dict[str, Any] = {'window': label_issues.window(config)}
  for split, li in issues.items():
    rec = recs[split]
    if li is None:
      info[split] = results_lib.Skipped(
          'the records hold no predictions (pred)')
      continue
    files.atomic_write_bytes(
        os.path.join(out_dir, f'label_issues_{split}.csv'),
        label_issues.table_csv_bytes(rec, li))
    info[split] = results_lib.LabelIssueSplit(
        pairs=int(li['pairs'].max()),
        window_probe_epochs=np.asarray(rec.probe_epochs)[
            scores_lib.window_mask(rec.probe_epochs, info['window'])],
        majority_other_class=int(np.sum(li['agreement'] > 0.5)),
        unanimous_other_class=int(np.sum(li['agreement'] >= 1.0)),
        agreed_class_shares=label_issues.suspect_shares(
            rec.labels, li['agreed_class'], cfg.label_issues.get('top_k', 64),
            score=li['score']))
  n = len(recs['train'].labels)
  noisy, source = label_noise.known_noisy(config, n)
  if noisy is None:
    noise = results_lib.Skipped(
        "no known label errors (config.analysis.known_noisy is '' and "
        'config.label_noise.fraction is 0)')
  else:
    noise = results_lib.LabelNoise.from_json(
        label_noise.detection_report(example, noisy, n, source), strict=True)
    logging.info('Known label errors (%s): label_issue AUROC %s.', source,
                 noise.scores.get(label_issues.NAME, {}).get('auroc'))
  return results_lib.LabelIssues(**info), noise


def run_analysis(config: Any, workdir: str, *, train_images: Any = None,
                 test_images: Any = None,
                 features: Any = None) -> dict[str, Any]:
  """Runs the whole analysis on a study's records and writes its outputs.

  Args:
    config: the study ConfigDict; ``config.analysis`` holds the knobs
      (defaults in configs/default.py).
    workdir: the study workdir (records in ``WORKDIR/records``).
    train_images: optional [N, H, W, C] train images in example-index order.
    test_images: optional test images, same layout (for mean images).
    features: optional [N, D] train features (e.g. penultimate activations)
      or {name: [N, D]}, for the same distance statistics.

  Returns:
    The dict written to ``WORKDIR/analysis/analysis.json`` (the JSON of a
    ``results.Analysis``; ``results.Analysis.from_json`` types it).
  """
  cfg = config.analysis
  out_dir = os.path.join(workdir, 'analysis')
  rule = sets_lib.SetRule.from_config(cfg.sets)
  # The architectures the config names, not whatever else the workdir holds.
  archs = config_fields.arch_list(config) if 'archs' in config else None
  train = records_lib.load(workdir, 'train', source=cfg.source, archs=archs)
  fused = (scores_lib.load_fused(workdir, train)
           if cfg.get('fused_scores', True) else None)
  test = None
  if cfg.test.enabled:
    try:
      test = records_lib.load(workdir, 'test', source='probe', archs=archs)
    except FileNotFoundError as e:
      logging.info('No test records (%s); skipping the test section.', e)
  labels = np.asarray(train.labels, np.int32)
  num_classes = int(max(labels.max(), -1 if test is None else
                        np.asarray(test.labels).max())) + 1

  logging.info('Scoring %d members x %d probes x %d train examples%s.',
               *train.correct.shape, '' if fused is None else
               f' (and {fused.correct.shape[1]} training-pass epochs)')
  sc = scores_lib.compute_scores(train, cfg.window, cfg.dynamics_window,
                                 fused=fused)
  issues = {'train': _add_label_issues(sc, train, config, num_classes)}
  grand = score_store.window_score_by_arch(workdir, 'grand', cfg.window)
  if grand is not None:  # --mode=checkpoint_probes ran: GraNd at step S.
    # One expectation per architecture (norms differ by architecture),
    # combined by per-architecture rank.
    for a, v in grand[0].items():
      sc['example'][f'grand/{a}'] = v
    sc['example']['grand'] = scores_lib.combine_by_rank(grand[0])
    logging.info('GraNd from the kept checkpoints at steps %s.', grand[1])
  easy, hard, set_info = _split_sets(sc, labels, rule, num_classes)
  # The parts of analysis.json by name (results.PARTS), filled in below.
  part: dict[str, Any] = {
      'config': cfg.to_dict(),
      'score_orientation': scores_lib.SCORE_ORIENTATION,
      'score_source': scores_lib.SCORE_SOURCE,
      'records': results_lib.Records(train=_records_info(train, sc),
                                     source=cfg.source,
                                     fused=fused is not None),
      'sets': results_lib.Sets(train=set_info),
      'score_summary': results_lib.ScoreSummary(
          train=_score_summary(sc['example'])),
      'score_correlation': results_lib.ScoreCorrelations(
          train=_score_correlation(sc['example'])),
  }
  logging.info('Agreement between %d members.', train.num_members)
  part['agreement'] = results_lib.Agreement.from_json(
      agreement_lib.agreement_report(
          sc['member'], [m.get('name', str(i)) for i, m in enumerate(
              train.members)], sc['group_ids'], sc['archs'], rule, labels,
          num_classes, jax.random.key(cfg.agreement.seed),
          intervals=cfg.agreement.intervals,
          ci_level=cfg.agreement.ci_level), strict=True)
  # Penultimate features saved by --mode=checkpoint_probes at the end of
  # the easiness window (None when it has not run).
  window_features = feature_similarity.load_window_features(workdir,
                                                            cfg.window)
  part['similarity'], means = _similarity(
      cfg, labels, easy, hard, train_images, features, num_classes,
      rule.name == 'class_balanced', window_features=window_features)
  if window_features is not None:  # Only the configured rule's says so.
    part['similarity'].feature_checkpoint = {
        'step': window_features.step, 'epoch': window_features.epoch}
  part['other_rule'] = _other_rule(cfg, rule, sc, train, labels,
                                     num_classes, train_images, features,
                                     window_features)
  npz = {f'train_{k}': v for k, v in means.items()}

  files.makedirs(out_dir)
  _write_scores(workdir, train, sc['example'], easy, hard, sc['archs'])
  if test is not None and rule.score in scores_lib.FUSED_SCORE_NAMES:
    logging.info('sets.score %s is a training-pass score; no test sets.',
                 rule.score)
    test = None
    part['test'] = results_lib.Skipped(
        f'sets.score {rule.score!r} comes from training passes; the test '
        'split has none')
  elif test is None:
    part['test'] = results_lib.Skipped(
        'no test records' if cfg.test.enabled
        else 'config.analysis.test.enabled is False')
  else:
    tsc = scores_lib.compute_scores(test, cfg.window, cfg.dynamics_window)
    issues['test'] = _add_label_issues(tsc, test, config, num_classes)
    tlabels = np.asarray(test.labels, np.int32)
    report, teasy, thard = heldout_errors.heldout_error_report(
        tsc, np.asarray(test.correct[:, -1, :]), tlabels, rule, num_classes)
    report['final_probe_epoch'] = float(test.probe_epochs[-1])
    part['test'] = results_lib.TestErrors.from_json(report, strict=True)
    part['records'].test = _records_info(test, tsc)
    _, _, part['sets'].test = _split_sets(tsc, tlabels, rule, num_classes)
    part['score_summary'].test = _score_summary(tsc['example'])
    _write_scores(workdir, test, tsc['example'], teasy, thard, tsc['archs'])
    if test_images is not None:
      timages, rows = _pixel_sample(test_images,
                                    cfg.similarity.max_streamed_images,
                                    cfg.similarity.seed)
      if rows is not None:
        tlabels, teasy, thard = tlabels[rows], teasy[rows], thard[rows]
      for name, mask in (('easy', teasy), ('hard', thard),
                         ('all', np.ones_like(teasy))):
        m, c = similarity_lib.class_mean_images(timages, tlabels, mask,
                                                num_classes)
        npz[f'test_{name}_mean'], npz[f'test_{name}_count'] = m, c
  part['label_issues'], part['label_noise'] = _label_issue_outputs(
      config, out_dir, issues, {'train': train, 'test': test}, sc['example'])
  # Outputs this run does not produce must not survive from an earlier run.
  for name, made in (('scores_test.npz', test is not None),
                     ('scores_test.csv', test is not None),
                     ('mean_images.npz', bool(npz)),
                     *((f'label_issues_{s}.csv', issues.get(s) is not None)
                       for s in records_lib.SPLITS)):
    stale = os.path.join(out_dir, name)
    if not made and files.exists(stale):
      logging.info('Removing %s from an earlier run.', stale)
      files.remove(stale)
  if npz:
    files.atomic_savez(os.path.join(out_dir, 'mean_images.npz'), npz)
  else:
    part['mean_images'] = results_lib.Skipped(
        'no images passed to run_analysis')
  result = results_lib.Analysis(**part).to_json()
  files.atomic_write_json(os.path.join(out_dir, 'analysis.json'), result)
  logging.info('Wrote %s', out_dir)
  return result
