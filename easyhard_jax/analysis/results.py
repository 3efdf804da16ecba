"""Typed analysis results: one dataclass per part of ``analysis.json``.

Like big_vision's evaluators, each part of the analysis is registered by name
(:func:`register`, :data:`PARTS`; the name is its key in ``analysis.json``)
and is a dataclass (:class:`Part`). ``analyze.run_analysis`` builds the parts
and writes ``analysis.json`` from them (:meth:`Analysis.to_json`); the report
reads the file back as typed values (:func:`read_analysis`), so a workdir
written before these classes existed renders the same way.

The JSON is exactly what the analysis wrote before the schema existed (the
file must stay byte-identical for the same inputs): a field's name is its
JSON key; a field marked :func:`optional` is left out of the JSON when it is
None (and reads back as None when absent); :class:`Skipped` is written as
``{'skipped': reason}``, the sentinel the file has always used.

Typed parts: ``records``, ``sets``, ``score_summary``, ``score_correlation``,
``test``, ``label_issues``, ``label_noise``, ``mean_images``,
``agreement``, ``similarity``, ``other_rule``. ``config``,
``score_orientation`` and ``score_source`` are plain mappings (a copy of
the config and two name tables). Inside a part, the deepest statistics
(overlap matrices, per-class distances, ceiling levels, per-score detection
rates) stay JSON values (lists, numbers, mappings): their field names say
where they live, not what each array holds.

Not yet typed: a distance block's ``global`` entry (``similarity.pixels``
and ``features``) is still ``{'skipped': reason, 'class_balanced': bool}``
when a set is too small (a skip that carries a field, so not a
:class:`Skipped`); the later stages' ``compare/results.json`` and
``heldout/results.json`` (compare.py, consistency.py and their
report sections) keep their own sentinel dicts.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from typing import Any, Mapping, TypeVar, Union

from easyhard_jax.storage import files

_P = TypeVar('_P', bound='Part')


@dataclasses.dataclass(frozen=True)
class Skipped:
  """A part (or piece of one) that was not computed, and why."""
  reason: str

  def to_json(self) -> dict[str, str]:
    """``{'skipped': reason}``, the form ``analysis.json`` uses."""
    return {'skipped': self.reason}

  @staticmethod
  def is_skipped_json(raw: Any) -> bool:
    """Whether ``raw`` is the JSON of a :class:`Skipped`."""
    return isinstance(raw, Mapping) and set(raw) == {'skipped'}

  @classmethod
  def from_json(cls, raw: Mapping[str, Any]) -> Skipped:
    """The :class:`Skipped` of ``{'skipped': reason}``."""
    return cls(str(raw['skipped']))


def optional(**kw: Any) -> Any:
  """A field that is left out of the JSON when None (absent reads as None)."""
  return dataclasses.field(default=None, metadata={'optional': True}, **kw)


def _encode(value: Any) -> Any:
  if isinstance(value, (Part, Skipped)):
    return value.to_json()
  if isinstance(value, dict):
    return {k: _encode(v) for k, v in value.items()}
  return value


def _union_args(tp: Any) -> tuple[Any, ...]:
  if typing.get_origin(tp) in (Union, types.UnionType):
    return typing.get_args(tp)
  return (tp,)


def _decode(tp: Any, raw: Any, strict: bool) -> Any:
  """``raw`` (JSON, or the analysis' own values) as the annotation ``tp``."""
  if raw is None or isinstance(raw, Skipped):
    return raw
  args = _union_args(tp)
  if Skipped in args and Skipped.is_skipped_json(raw):
    return Skipped.from_json(raw)
  for a in args:
    if isinstance(a, type) and issubclass(a, Part):
      return raw if isinstance(raw, a) else a.from_json(raw, strict=strict)
    if typing.get_origin(a) is dict and isinstance(raw, Mapping):
      vt = typing.get_args(a)[1]
      return {k: _decode(vt, v, strict) for k, v in raw.items()}
  return raw


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
  return typing.get_type_hints(cls)


class Part:
  """Base of the typed results: JSON in and out, driven by the fields."""

  def to_json(self) -> dict[str, Any]:
    """The part as ``analysis.json`` holds it (before ``files.to_jsonable``).

    Returns:
      {field name: value}, nested parts and :class:`Skipped` encoded, fields
      marked :func:`optional` left out when None. Arrays stay arrays;
      ``files.to_jsonable`` turns them (and NaN, inf) into JSON.
    """
    out = {}
    for f in dataclasses.fields(self):
      v = getattr(self, f.name)
      if v is None and f.metadata.get('optional'):
        continue
      out[f.name] = _encode(v)
    return out

  @classmethod
  def from_json(cls: type[_P], raw: Mapping[str, Any], *,
                strict: bool = False) -> _P:
    """The part from its JSON (or from the analysis' dict of arrays).

    Args:
      raw: the part's mapping. Keys it lacks read as None (an older
        analysis.json may lack newer fields).
      strict: raise on keys beyond the fields, or on an optional field
        present as None (the analysis builds its parts strictly, so nothing
        it computes is left out of the file); else they are ignored (an
        older analysis.json may hold retired keys).

    Returns:
      The typed part.
    """
    hints = _hints(cls)
    if strict and set(raw) - set(hints):
      raise ValueError(f'{cls.__name__} has no fields '
                       f'{sorted(set(raw) - set(hints))}.')
    if strict and any(raw.get(f.name, 0) is None and f.metadata.get('optional')
                      for f in dataclasses.fields(cls)):
      # It would be left out of the JSON: not the file the dict says.
      raise ValueError(f'{cls.__name__}: an optional field is present as None.')
    return cls(**{f.name: _decode(hints[f.name], raw.get(f.name), strict)
                  for f in dataclasses.fields(cls) if f.init})


PARTS: dict[str, type] = {}


def register(name: str):
  """Class decorator: the part ``name`` of analysis.json has this type."""

  def wrap(cls: type[_P]) -> type[_P]:
    if name in PARTS:
      raise ValueError(f'Analysis part {name!r} registered twice.')
    PARTS[name] = cls
    return cls

  return wrap


def part_from_json(name: str, raw: Any) -> Any:
  """The registered part ``name`` from its JSON (a Skipped where skipped)."""
  return _decode(_hints(Analysis)[name], raw, False)


def part_to_json(value: Any) -> Any:
  """A part (or Skipped, or mapping of them) as ``analysis.json`` holds it."""
  return files.to_jsonable(_encode(value))


# Records and sets.


@dataclasses.dataclass
class RecordsInfo(Part):
  """What one split's records hold (epochs as float arrays)."""
  members: int
  probes: int
  fused_epochs: Any  # Training-pass epochs, or None without fused records.
  examples: int
  archs: list[str]
  member_names: list[str]
  probe_epochs: Any
  window_probe_epochs: Any
  dynamics_probe_epochs: Any


@register('records')
@dataclasses.dataclass
class Records(Part):
  """The records the analysis read."""
  train: RecordsInfo
  source: str
  fused: bool
  test: RecordsInfo | None = optional()


@dataclasses.dataclass
class SetInfo(Part):
  """One split's easy and hard sets: the rule, sizes, sizes per class."""
  rule: str
  score: str
  class_rule: str
  k: Any  # Per-class (or global) k of a top-k rule; None otherwise.
  easy_size: int
  hard_size: int
  both: int
  easy_per_class: Any
  hard_per_class: Any
  class_sizes: Any
  easy_largest_class: int
  easy_largest_class_share: float | None
  hard_largest_class: int
  hard_largest_class_share: float | None

  def largest_class_share(self, which: str) -> float | None:
    """The share of the ``which`` ('easy'/'hard') set in its largest class."""
    return getattr(self, f'{which}_largest_class_share')


@register('sets')
@dataclasses.dataclass
class Sets(Part):
  """The easy and hard sets of each split under the configured rule."""
  train: SetInfo
  test: SetInfo | None = optional()


# Score summaries.


@dataclasses.dataclass
class ScoreStats(Part):
  """A score's finite values: mean, std, min, max."""
  mean: float
  std: float
  min: float
  max: float


@register('score_summary')
@dataclasses.dataclass
class ScoreSummary(Part):
  """{score: its statistics, None when absent or not finite} per split."""
  train: dict[str, ScoreStats | None]
  test: dict[str, ScoreStats | None] | None = optional()


@dataclasses.dataclass
class ScoreCorrelation(Part):
  """Spearman between the finite scores, each oriented higher = easier."""
  scores: list[str]
  oriented: str
  spearman: Any  # [S, S]


@register('score_correlation')
@dataclasses.dataclass
class ScoreCorrelations(Part):
  """The train split's score correlation."""
  train: ScoreCorrelation | Skipped


# Test errors.


@dataclasses.dataclass
class ErrorsInSet(Part):
  """How many of each member's final test errors fall in a set."""
  errors: Any  # int [M]
  errors_in_set: Any  # int [M]
  fraction: Any  # [M], NaN (null) for a member without errors.
  pooled_fraction: float | None
  set_share: float
  enrichment: float | None


@register('test')
@dataclasses.dataclass
class TestErrors(Part):
  """The test split's sets and the share of final test errors they hold."""
  num_examples: int
  final_error_rate: Any  # [M]
  easy_size: int
  hard_size: int
  errors_in_hard: ErrorsInSet
  errors_in_easy: ErrorsInSet
  errors_in_hard_leave_one_out: ErrorsInSet | Skipped
  final_probe_epoch: float


# Label issues and known label errors.


@dataclasses.dataclass
class LabelIssueSplit(Part):
  """One split's label-issue statistics (label_issues_{split}.csv)."""
  pairs: int
  window_probe_epochs: Any
  majority_other_class: int
  unanimous_other_class: int
  agreed_class_shares: Any  # label_issues.suspect_shares.


@register('label_issues')
@dataclasses.dataclass
class LabelIssues(Part):
  """The label-issue window and each split's statistics."""
  window: Any
  train: LabelIssueSplit | Skipped
  test: LabelIssueSplit | Skipped | None = optional()


@register('label_noise')
@dataclasses.dataclass
class LabelNoise(Part):
  """Every score's AUROC and precision at k for the known label errors."""
  source: str
  known_noisy: int
  examples: int
  k: int
  # {score: {'auroc', 'precision_at_k', 'oriented', 'nan_examples'}}.
  scores: dict[str, Any]


# Agreement.


@dataclasses.dataclass
class Overlap(Part):
  """Pairwise overlap of sets ([R, S] matrices; sizes [R] and [S])."""
  intersection: Any
  overlap: Any
  jaccard: Any
  chance_intersection: Any
  chance_overlap: Any
  chance_jaccard: Any
  ratio: Any
  z: Any
  size_a: Any
  size_b: Any


@dataclasses.dataclass
class MemberPairs(Part):
  """Agreement between single members."""
  easy_sets: Overlap
  hard_sets: Overlap
  spearman_easiness: Any  # [M, M]
  # {statistic: {'same_arch', 'cross_arch'}}: mean over off-diagonal pairs.
  summary: dict[str, Any]


@dataclasses.dataclass
class ArchPairs(Part):
  """Agreement between architectures (their members averaged)."""
  easy_sets: Overlap
  hard_sets: Overlap
  spearman_easiness: Any  # [G, G]
  members_per_arch: list[int]
  # {'method', 'level', 'covers', 'intervals': {stat: {'lo', 'hi', ...}}}.
  seed_interval: dict[str, Any] | None = optional()


@dataclasses.dataclass
class Ceiling(Part):
  """Seed-to-seed ceiling against cross-architecture agreement."""
  design: str
  floor: dict[str, Any]
  # One per members-per-group level: {'members', 'summary': {stat:
  # {'ceiling', 'ceiling_sd', 'cross_arch', 'cross_arch_sd', 'floor',
  # 'normalized_cross'}}, 'draws', 'stats', ...}.
  levels: list[dict[str, Any]]


@register('agreement')
@dataclasses.dataclass
class Agreement(Part):
  """Agreement between members and architectures under one set rule."""
  set_rule: str
  chance: str
  members: list[str]
  archs: list[str]
  member_arch: list[str]
  member_pairs: MemberPairs | Skipped
  arch_pairs: ArchPairs | Skipped
  ceiling: Ceiling | None = optional()  # With two or more members.


# Similarity.


@register('similarity')
@dataclasses.dataclass
class Similarity(Part):
  """Within-set distances, colour and frequency of the easy and hard sets.

  ``pixels`` and each ``features`` entry: {'global': {metric: {'easy',
  'hard', 'random', 'hard_over_easy'}, 'size', 'class_balanced'} (or a
  skip), 'per_class': {class: the same or None}}.
  """
  class_balanced: bool
  pixel_sample: dict[str, int] | None = optional()  # {'rows', 'of'}.
  pixels: dict[str, Any] | None = optional()
  colour: dict[str, Any] | None = optional()  # {set: {'mean', 'std'}}.
  high_frequency: dict[str, Any] | None = optional()
  hf_cutoff: float | None = optional()
  hf_remove_mean: bool | None = optional()
  features: dict[str, Any] | None = optional()  # {name: as pixels}.
  feature_checkpoint: dict[str, Any] | None = optional()  # step, epoch.


@register('other_rule')
@dataclasses.dataclass
class OtherRule(Part):
  """Sets, agreement and similarity under the other class rule."""
  class_rule: str
  sets: SetInfo
  agreement: Agreement
  similarity: Similarity | Skipped


@dataclasses.dataclass
class Analysis(Part):
  """The whole of ``analysis.json``: the registered parts and three tables.

  ``config`` is ``config.analysis``; ``score_orientation`` and
  ``score_source`` map each score name to its orientation and records.
  """
  config: dict[str, Any]
  score_orientation: dict[str, Any]
  score_source: dict[str, Any]
  records: Records
  sets: Sets
  score_summary: ScoreSummary
  score_correlation: ScoreCorrelations
  agreement: Agreement
  similarity: Similarity | Skipped
  other_rule: OtherRule | Skipped
  test: TestErrors | Skipped
  label_issues: LabelIssues
  label_noise: LabelNoise | Skipped
  # Present only when skipped (the images are in mean_images.npz).
  mean_images: Skipped | None = optional()

  def to_json(self) -> dict[str, Any]:
    """The JSON of ``analysis.json`` (see :meth:`Part.to_json`)."""
    return files.to_jsonable(super().to_json())


def read_analysis(path: str) -> Analysis:
  """``analysis.json`` (of this version or an older one) as typed parts.

  Args:
    path: the file, e.g. ``WORKDIR/analysis/analysis.json``.

  Returns:
    The typed :class:`Analysis`.
  """
  with files.open_file(path) as f:
    return Analysis.from_json(json.load(f))


def skipped(value: Any) -> bool:
  """Whether ``value`` is a :class:`Skipped` (or absent, None)."""
  return value is None or isinstance(value, Skipped)
