"""Report section: suspected label errors and how well scores find known ones.

Reads ``analysis/label_issues_{split}.csv`` (ranked, most suspect first; see
analysis/label_issues.py) and ``analysis.json['label_noise']``. Shows the top
suspects as images with the given and the agreed label side by side under
each, and, with known label errors, every score's AUROC and precision at k.
"""

from __future__ import annotations

import io
import os
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use('Agg')  # Headless, as report/figures.py.
# pylint: disable=g-import-not-at-top,wrong-import-position
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np
# pylint: enable=g-import-not-at-top,wrong-import-position

from easyhard_jax.storage import files
from easyhard_jax.analysis import results as results_lib
from easyhard_jax.report import html as html_lib

_COLS = 8  # Tiles per row.


def _tile(image: Any) -> np.ndarray:
  """One image as float RGB in [0, 1]."""
  x = np.asarray(image, np.float32)
  if np.asarray(image).dtype == np.uint8 or (x.size and x.max() > 1.5):
    x = x / 255.0
  if x.ndim == 2:
    x = x[..., None]
  x = np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x[..., :3]
  return np.clip(x, 0.0, 1.0)


def suspects_grid(images: Any, rows: Sequence[Mapping[str, str]],
                  title: str, class_names: Sequence[str] | None = None
                  ) -> bytes:
  """Top suspects, each captioned "given | agreed" (PNG bytes).

  Args:
    images: [N, H, W(, C)] images of the split, indexable by example index.
    rows: label_issues CSV rows (index, given_label, agreed_class, agreement).
    title: the figure title.
    class_names: optional names of the classes (default: their numbers).
  """
  name = (lambda c: str(c)) if class_names is None else (
      lambda c: class_names[c] if 0 <= c < len(class_names) else str(c))
  n = len(rows)
  ncols = min(_COLS, max(n, 1))
  nrows = max(1, -(-n // ncols))
  height = 1.65 * nrows + 0.6
  fig = Figure(figsize=(1.35 * ncols, height))
  axes = fig.subplots(nrows, ncols, squeeze=False)
  fig.subplots_adjust(left=0.02, right=0.98, bottom=0.2 / height,
                      top=1.0 - 0.6 / height, hspace=0.45)
  for k, ax in enumerate(axes.ravel()):
    ax.set_axis_off()
    if k >= n:
      continue
    r = rows[k]
    given, agreed = int(r['given_label']), int(r['agreed_class'])
    ax.imshow(_tile(images[int(r['index'])]), interpolation='nearest')
    ax.set_title(f"#{r['index']} ({float(r['agreement']):.2f})", fontsize=7)
    ax.text(0.25, -0.04, f'given {name(given)}', color='#d1495b',
            fontsize=7, ha='center', va='top', transform=ax.transAxes)
    ax.text(0.75, -0.04, f"agreed {name(agreed) if agreed >= 0 else '-'}",
            color='#2a9d4b', fontsize=7, ha='center', va='top',
            transform=ax.transAxes)
  fig.suptitle(title, fontsize=9, y=1.0 - 0.1 / height, va='top')
  FigureCanvasAgg(fig)
  buf = io.BytesIO()
  fig.savefig(buf, format='png', dpi=110, bbox_inches='tight')
  return buf.getvalue()


def _detection_table(noise: results_lib.LabelNoise) -> str:
  rows = sorted(((name, v.get('auroc'), v.get('precision_at_k'),
                  v.get('oriented'))
                 for name, v in (noise.scores or {}).items()),
                key=lambda r: -(r[1] if r[1] is not None else -1.0))
  return html_lib.table(
      ['score', 'AUROC', f'precision at k = {noise.k}', 'oriented'],
      rows, f'Finding the {noise.known_noisy} known label errors of '
      f'{noise.examples} train examples ({noise.source}); each '
      'score oriented harder = more suspect')


def _shares_note(split: str, shares: Mapping[str, Any]) -> str:
  """The agreed classes of the top suspects; a note if one dominates."""
  classes = shares.get('classes') or {}
  n = shares.get('suspects', 0)
  if not n or not classes:
    return f'{split}: no suspect has an agreed class.'
  top = sorted(classes.items(), key=lambda kv: -kv[1][0])[:3]
  parts = ', '.join(f'{c} {s:.0%} (data {d:.0%})'
                    for c, (s, d) in top)
  text = f'{split}: agreed classes of the top {n} suspects: {parts}.'
  dom = shares.get('dominant')
  if dom is not None:
    s, d = classes[str(dom)]
    text += (f' Note: one agreed class ({dom}) holds {s:.0%} of '
             f'the suspects against {d:.0%} of the data '
             f"({shares.get('ratio') or float('inf'):.1f}x): a class the members "
             'over-predict (class bias, e.g. early in training) reads as '
             'label error; check the window and the calibration before '
             'trusting these suspects.')
  return text


def build(study: Any, sec: html_lib.Section) -> html_lib.Section:
  """Fills in the label-issue section (see the module docstring)."""
  sec.explanation = (
      'Examples whose given label the members, before they memorise, find '
      'least likely, most suspect first (config.analysis.label_issues.score:'
      ' p_given ranks by the mean probability of the given label over the '
      'label-issue window, agreed_margin by how much more probability the '
      'agreed class gets). The agreed class is the class most (member, '
      'probe) pairs predict instead (in brackets: its share of the pairs); '
      'a prediction counts for it only when its probability reaches the '
      'mean probability the members give that class\'s own examples '
      '(confident learning\'s per-class threshold; label_issues.calibration).'
      ' Under each image: the given label (red) and the agreed class '
      '(green; - = none).')
  adir = os.path.join(study.workdir, 'analysis')
  a = study.analysis
  if a is None:
    return html_lib.not_run(sec, 'no analysis/analysis.json: run '
                            '--mode=analysis first')
  top = 32
  cfg = getattr(study, 'config', None)
  try:
    top = int(cfg.analysis.label_issues.top_k)
  except (AttributeError, KeyError, TypeError):
    pass
  body, made = [], False
  for split, images in (('train', study.train_images),
                        ('test', study.test_images)):
    path = os.path.join(adir, f'label_issues_{split}.csv')
    if not files.exists(path):
      continue
    rows = files.read_csv(path)  # Ranked: most suspect first.
    made = True
    info = getattr(a.label_issues, split, None) if a.label_issues else None
    if results_lib.skipped(info):
      info = results_lib.LabelIssueSplit(*(('?',) * 4), None)
    body.append(html_lib.paragraph(
        f'{split}: {info.majority_other_class} examples with more '
        f'than half of their {info.pairs} (member, probe) '
        'predictions in the label-issue window on one other class '
        f'({info.unanimous_other_class} unanimous).'))
    if info.agreed_class_shares:
      body.append(html_lib.paragraph(_shares_note(
          split, info.agreed_class_shares)))
    if images is not None and rows:
      shown = rows[:top]
      sec.figures.append(html_lib.FigureItem(
          f'label_issues_{split}', suspects_grid(
              images, shown, f'{split}: top {len(shown)} suspects'),
          f'{split.capitalize()} split: the {len(shown)} most suspect '
          f'examples (window {a.label_issues and a.label_issues.window} '
          'epochs).'))
  if not made:
    return html_lib.not_run(sec, 'no label_issues_*.csv: the records hold '
                            'no predictions (recorded before pred existed)')
  noise = a.label_noise
  if isinstance(noise, results_lib.LabelNoise):
    body.append(_detection_table(noise))
  elif isinstance(noise, results_lib.Skipped):
    body.append(html_lib.paragraph(f'Known label errors: {noise.reason}.'))
  sec.body_html = '\n'.join(body)
  return sec
