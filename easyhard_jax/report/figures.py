"""The report's figures: each function takes plain data and returns PNG bytes.

Nothing here reads files or knows the workdir layout; :mod:`build` gathers the
data. Matplotlib runs on the Agg backend (no display needed) through its
object API, so figures never touch pyplot's global state and can be built from
any thread.
"""

from __future__ import annotations

import io
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use('Agg')  # Before anything imports pyplot: headless machines.
# pylint: disable=g-import-not-at-top,wrong-import-position
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np
# pylint: enable=g-import-not-at-top,wrong-import-position

SET_COLOURS = {'easy': '#2a9d4b', 'hard': '#d1495b', 'random': '#7f7f7f',
               'all': '#4c72b0'}
_DPI = 110


def _png(fig: Figure) -> bytes:
  FigureCanvasAgg(fig)
  buf = io.BytesIO()
  fig.savefig(buf, format='png', dpi=_DPI, bbox_inches='tight')
  return buf.getvalue()


def _to_unit(images: np.ndarray) -> np.ndarray:
  """Images as float in [0, 1], NaN kept (uint8 or float in [0,1]/[0,255])."""
  x = np.asarray(images, np.float32)
  finite = x[np.isfinite(x)]
  if np.asarray(images).dtype == np.uint8 or (finite.size and
                                              finite.max() > 1.5):
    x = x / 255.0
  return np.clip(x, 0.0, 1.0)


def _mosaic(tiles: np.ndarray, frames: np.ndarray, pad: int,
            frame_colours: Mapping[int, Sequence[float]]) -> np.ndarray:
  """Lays out tiles [R, C, H, W, 3] on a white canvas with coloured frames.

  Each tile gets a ``pad``-pixel frame (coloured by its code in ``frames``,
  white for codes without a colour) and a ``pad``-pixel white gap around it.
  """
  r, c, h, w, _ = tiles.shape
  cell_h, cell_w = h + 4 * pad, w + 4 * pad
  canvas = np.ones((r * cell_h, c * cell_w, 3), np.float32)
  for i in range(r):
    for j in range(c):
      y, x = i * cell_h + pad, j * cell_w + pad
      colour = frame_colours.get(int(frames[i, j]))
      if colour is not None:
        canvas[y:y + h + 2 * pad, x:x + w + 2 * pad] = colour
      tile = tiles[i, j]
      canvas[y + pad:y + pad + h, x + pad:x + pad + w] = np.where(
          np.isnan(tile), 1.0, tile)
  return canvas


def _rgb(images: np.ndarray) -> np.ndarray:
  x = _to_unit(images)
  if x.ndim == 3:
    x = x[..., None]
  return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x[..., :3]


def example_grid(images: np.ndarray, rows: Sequence[Sequence[int]],
                 row_labels: Sequence[str], frames: np.ndarray | None = None,
                 title: str = '') -> bytes:
  """A grid of examples, one row per class.

  Args:
    images: [N, H, W(, C)] uint8 or float images of the split.
    rows: per row, the example indices to show (rows may be shorter; the rest
      stays blank).
    row_labels: one label per row.
    frames: optional int [R, C] frame codes: 1 = in the easy set, 2 = in the
      hard set, 0 = neither.
    title: figure title.

  Returns:
    PNG bytes.
  """
  images = _rgb(images)
  h, w = images.shape[1:3]
  ncols = max([len(r) for r in rows] + [1])
  tiles = np.full((len(rows), ncols, h, w, 3), np.nan, np.float32)
  for i, idx in enumerate(rows):
    for j, k in enumerate(idx):
      tiles[i, j] = images[int(k)]
  if frames is None:
    frames = np.zeros((len(rows), ncols), int)
  pad = max(1, round(max(h, w) / 12))
  colours = {1: matplotlib.colors.to_rgb(SET_COLOURS['easy']),
             2: matplotlib.colors.to_rgb(SET_COLOURS['hard'])}
  canvas = _mosaic(tiles, frames, pad, colours)
  scale = 0.55 if max(h, w) <= 16 else 0.8  # Inches per tile.
  fig = Figure(figsize=(1.2 + ncols * scale, 0.6 + len(rows) * scale))
  ax = fig.add_subplot()
  ax.imshow(canvas, interpolation='nearest')
  ax.set_yticks([(i + 0.5) * (h + 4 * pad) for i in range(len(rows))],
                list(row_labels))
  ax.set_xticks([])
  for side in ax.spines.values():
    side.set_visible(False)
  if title:
    ax.set_title(title)
  return _png(fig)


def mean_images(means: Mapping[str, np.ndarray],
                counts: Mapping[str, np.ndarray], title: str = '') -> bytes:
  """Per-class mean images, one row per set (blank where a set has none).

  Args:
    means: {set name: float [K, H, W, C] mean images (NaN where empty)}.
    counts: {set name: int [K] examples averaged}.
    title: figure title.

  Returns:
    PNG bytes.
  """
  names = list(means)
  k = np.asarray(means[names[0]]).shape[0]
  fig = Figure(figsize=(1.0 + 1.0 * k, 0.5 + 1.25 * len(names)))
  axes = fig.subplots(len(names), k, squeeze=False)
  for i, name in enumerate(names):
    m = _rgb(np.asarray(means[name]))
    for c in range(k):
      ax = axes[i, c]
      ax.set_xticks([])
      ax.set_yticks([])
      n = int(np.asarray(counts[name])[c])
      if n > 0 and np.isfinite(m[c]).all():
        ax.imshow(m[c], interpolation='nearest', vmin=0.0, vmax=1.0)
      else:  # An image, not a facecolour, so the cell keeps the tiles' shape.
        ax.imshow(np.full(m[c].shape, 0.93), vmin=0.0, vmax=1.0)
      ax.set_xlabel(f'n={n}', fontsize=7)
      if i == 0:
        ax.set_title(f'class {c}', fontsize=8)
      if c == 0:
        ax.set_ylabel(name, color=SET_COLOURS.get(name, 'black'))
  if title:
    fig.suptitle(title)
  return _png(fig)


def score_histogram(values: Mapping[str, np.ndarray],
                    markers: Mapping[str, float] | None = None,
                    xlabel: str = 'easiness') -> bytes:
  """Overlaid normalised histograms of a score, one per split.

  Args:
    values: {split name: [N] scores}; NaNs are dropped.
    markers: optional {label: x} vertical lines (e.g. the set thresholds).
    xlabel: x-axis label.

  Returns:
    PNG bytes.
  """
  fig = Figure(figsize=(6.4, 3.4))
  ax = fig.add_subplot()
  finite = [np.asarray(v, np.float64)[np.isfinite(v)] for v in values.values()]
  allv = np.concatenate(finite) if finite else np.zeros(1)
  lo, hi = float(allv.min()), float(allv.max())
  bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 31)
  for (name, _), v in zip(values.items(), finite):
    ax.hist(v, bins=bins, density=True, histtype='stepfilled', alpha=0.35,
            label=f'{name} (n={v.size})')
    ax.hist(v, bins=bins, density=True, histtype='step', color='black',
            linewidth=0.5)
  for (label, x), colour in zip((markers or {}).items(),
                                ('#2a9d4b', '#d1495b', '#555555')):
    ax.axvline(x, color=colour, linestyle='--', linewidth=1, label=label)
  ax.set_xlabel(xlabel)
  ax.set_ylabel('density')
  ax.legend(fontsize=8)
  return _png(fig)


def heatmap(matrix: np.ndarray, labels: Sequence[str], title: str, *,
            cbar_label: str = '', center: float | None = None,
            vmin: float | None = None,
            intervals: tuple[np.ndarray, np.ndarray] | None = None,
            mask_diagonal: bool = False, fmt: str = '.2f',
            groups: Sequence[str] | None = None) -> bytes:
  """An annotated square heatmap.

  Args:
    matrix: [K, K] values (NaN / None cells are drawn blank).
    labels: K tick labels.
    title: axes title.
    cbar_label: colour bar label.
    center: value drawn white in a diverging colour map (None: sequential).
    vmin: lower end of a diverging map (default: symmetric about center).
    intervals: optional (lo, hi) [K, K] arrays annotated under each value.
    mask_diagonal: leave the diagonal blank (self-comparisons).
    fmt: number format of the annotations.
    groups: optional K group names; lines are drawn between groups.

  Returns:
    PNG bytes.
  """
  m = np.array(matrix, dtype=np.float64)
  k = m.shape[0]
  if mask_diagonal:
    np.fill_diagonal(m, np.nan)
  size = min(max(3.6, 0.55 * k + 2.0), 11.0)
  fig = Figure(figsize=(size + 1.0, size))
  ax = fig.add_subplot()
  fin = m[np.isfinite(m)]
  # Blank (masked) cells grey, so they are not read as the white centre.
  diverging = matplotlib.colormaps['RdBu_r'].with_extremes(bad='#e4e4e4')
  if center is not None and vmin is None:
    span = max(float(np.abs(fin - center).max()) if fin.size else 1.0, 1e-3)
    im = ax.imshow(m, cmap=diverging, vmin=center - span, vmax=center + span)
  elif center is not None:  # Bounded below (a ratio): two linear halves.
    hi = max(float(fin.max()) if fin.size else center, center + 1e-3)
    im = ax.imshow(m, cmap=diverging, norm=matplotlib.colors.TwoSlopeNorm(
        center, vmin=min(vmin, center - 1e-3), vmax=hi))
  else:
    im = ax.imshow(m, cmap=matplotlib.colormaps['viridis'].with_extremes(
        bad='#e4e4e4'))
  rgba = im.cmap(im.norm(np.nan_to_num(m)))
  # Rec. 601 luma: dark cells get white text.
  dark = rgba[..., :3] @ np.array([0.299, 0.587, 0.114]) < 0.5
  cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
  cb.set_label(cbar_label)
  ax.set_xticks(range(k), list(labels), rotation=45, ha='right', fontsize=8)
  ax.set_yticks(range(k), list(labels), fontsize=8)
  ax.set_title(title)
  annotate_size = 9 if k <= 6 else 7 if k <= 12 else 0
  for i in range(k):
    for j in range(k):
      if not annotate_size:
        break
      if not np.isfinite(m[i, j]):
        ax.text(j, i, '-', ha='center', va='center', color='#999999')
        continue
      text = format(m[i, j], fmt)
      if intervals is not None and k <= 6:
        text += (f'\n[{format(intervals[0][i][j], fmt)}, '
                 f'{format(intervals[1][i][j], fmt)}]')
      ax.text(j, i, text, ha='center', va='center', fontsize=annotate_size,
              color='white' if dark[i, j] else 'black')
  if groups is not None:
    for b in [i for i in range(1, k) if groups[i] != groups[i - 1]]:
      ax.axhline(b - 0.5, color='black', linewidth=1)
      ax.axvline(b - 0.5, color='black', linewidth=1)
  return _png(fig)


def set_bars(panels: Mapping[str, Mapping[str, Any]], ylabel: str = '',
             sets: Sequence[str] = ('easy', 'hard', 'random'),
             ref_label: str = 'reference') -> bytes:
  """Bars of a statistic per set, with error bars and optional points.

  Args:
    panels: {panel title: {set: {'value': float, 'err': float or None,
      'points': [floats] or None, 'ref': float or None}}}; a missing set is
      skipped; 'ref' draws a dashed reference segment across that bar.
    ylabel: y-axis label of every panel.
    sets: set names in bar order (colours follow the first word).
    ref_label: legend label of the reference segments.

  Returns:
    PNG bytes.
  """
  n = len(panels)
  fig = Figure(figsize=(max(3.2 * n, 1.1 * len(sets) + 1.5) + 0.6, 3.4))
  axes = fig.subplots(1, n, squeeze=False)[0]
  rng = np.random.default_rng(0)  # Jitter only; deterministic figures.
  for ax, (title, stats) in zip(axes, panels.items()):
    names = [s for s in sets if stats.get(s) is not None]
    values = []
    for x, name in enumerate(names):
      st = stats[name]
      err = st.get('err')
      ax.bar(x, st['value'], alpha=0.8,
             color=SET_COLOURS.get(name.split()[0], '#4c72b0'),
             yerr=None if err is None else [[err], [err]],
             capsize=4, error_kw={'linewidth': 1})
      pts = [p for p in (st.get('points') or []) if p is not None]
      if pts:
        ax.scatter(x + rng.uniform(-0.18, 0.18, len(pts)), pts, s=9,
                   color='black', alpha=0.6, zorder=3, linewidths=0)
      if st.get('ref') is not None:
        ax.hlines(st['ref'], x - 0.45, x + 0.45, colors='black',
                  linestyles='--', linewidth=1.2, zorder=4,
                  label=ref_label if not values else None)
      values += [st['value'], st.get('ref') or 0.0] + pts
    if values and min(values) >= 0:  # Std bars must not suggest values < 0.
      ax.set_ylim(bottom=0.0)
    if any(stats[k].get('ref') is not None for k in names):
      ax.legend(fontsize=8)
    ax.set_xticks(range(len(names)), names)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)
  fig.tight_layout()
  return _png(fig)


def member_lines(panels: Mapping[str, Mapping[str, tuple[np.ndarray,
                                                           np.ndarray]]],
                 groups: Mapping[str, str], xlabel: str = 'epoch') -> bytes:
  """Line plots with one line per member, coloured by group (architecture).

  Args:
    panels: {panel y-label: {member name: (x [T], y [T])}}.
    groups: {member name: group name}; members of a group share a colour.
    xlabel: x-axis label.

  Returns:
    PNG bytes.
  """
  n = len(panels)
  fig = Figure(figsize=(4.2 * n + 0.4, 3.5))
  axes = fig.subplots(1, n, squeeze=False)[0]
  order = list(dict.fromkeys(groups.values()))
  cmap = matplotlib.colormaps['tab10']
  colours = {g: cmap(i % 10) for i, g in enumerate(order)}
  styles = ('-', '--', ':', '-.')
  for ax, (ylabel, lines) in zip(axes, panels.items()):
    seen: dict[str, int] = {}
    for name, (x, y) in lines.items():
      g = groups.get(name, name)
      k = seen[g] = seen.get(g, -1) + 1
      ax.plot(x, y, styles[k % len(styles)], color=colours.get(g, 'black'),
              marker='.', markersize=4, linewidth=1.2,
              label=g if k == 0 else None)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8)
  fig.tight_layout()
  return _png(fig)


def curves(spec: Mapping[str, Any]) -> bytes:
  """Mean curves with +-std error bars and an optional reference line.

  Args:
    spec: {'curves': [{'name', 'x', 'mean', 'std' (optional)}], 'reference':
      float or None, 'reference_label' (optional), 'xlabel', 'ylabel',
      'title' (optional)}; see :mod:`easyhard_jax.report` for the contract.

  Returns:
    PNG bytes.
  """
  fig = Figure(figsize=(6.4, 3.8))
  ax = fig.add_subplot()
  for c in spec['curves']:
    x = np.asarray(c['x'], np.float64)
    y = np.asarray([np.nan if v is None else v for v in c['mean']],
                   np.float64)
    std = c.get('std')
    yerr = None if std is None else np.asarray(
        [0.0 if v is None else v for v in std], np.float64)
    ax.errorbar(x, y, yerr=yerr, marker='o', markersize=4, capsize=3,
                linewidth=1.4, label=str(c.get('name', '')))
  ref = spec.get('reference')
  if ref is not None:
    ax.axhline(float(ref), color='black', linestyle='--', linewidth=1,
               label=spec.get('reference_label') or 'reference')
  ax.set_xlabel(spec.get('xlabel') or '')
  ax.set_ylabel(spec.get('ylabel') or '')
  if spec.get('title'):
    ax.set_title(spec['title'])
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  return _png(fig)


def horizontal_bars(values: Mapping[str, float], xlabel: str) -> bytes:
  """One horizontal bar per named value (e.g. seconds per stage).

  Args:
    values: {label: value}, drawn top to bottom in order.
    xlabel: x-axis label.

  Returns:
    PNG bytes.
  """
  fig = Figure(figsize=(6.0, 0.6 + 0.35 * max(len(values), 1)))
  ax = fig.add_subplot()
  names = list(values)
  ax.barh(range(len(names)), [values[k] for k in names], color='#4c72b0')
  ax.set_yticks(range(len(names)), names)
  ax.invert_yaxis()
  ax.set_xlabel(xlabel)
  return _png(fig)


def grouped_bars(groups: Sequence[str],
                 panels: Sequence[Mapping[str, Any]]) -> bytes:
  """Side-by-side panels of bars grouped by category, with reference lines.

  Args:
    groups: the x-axis categories (e.g. cause probes), in order.
    panels: one dict per panel: 'title', 'ylabel', 'series' (a list of
      {'name', 'colour' (optional), 'values': [G] floats or None (no bar),
      'err': [G] or None (error bars), 'points': [G] lists of floats or None
      (dots on the bar)}), 'lines' (a list of {'y', 'label', 'style'
      (matplotlib line style, default '--')}: horizontal reference lines) and
      optionally 'ylim' ((bottom, top); either may be None).

  Returns:
    PNG bytes.
  """
  n = len(panels)
  ncols = 2 if n == 4 else n  # Four panels in one row would be unreadable.
  nrows = -(-n // ncols)
  width_per_panel = min(4.6, 1.6 + 0.8 * len(groups))
  fig = Figure(figsize=(width_per_panel * ncols + 0.4, 3.8 * nrows))
  axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
  for ax in axes[n:]:
    ax.set_visible(False)
  x = np.arange(len(groups), dtype=np.float64)
  rng = np.random.default_rng(0)  # Jitter only; deterministic figures.
  for ax, panel in zip(axes, panels):
    series = panel['series']
    width = 0.8 / max(len(series), 1)
    for i, s in enumerate(series):
      off = (i - (len(series) - 1) / 2) * width
      values = np.asarray([np.nan if v is None else v for v in s['values']],
                          np.float64)
      err = s.get('err')
      yerr = None if err is None else np.asarray(
          [0.0 if e is None else e for e in err], np.float64)
      ok = np.isfinite(values)  # A missing value is no bar, not a zero.
      ax.bar((x + off)[ok], values[ok], 0.9 * width,
             yerr=None if yerr is None else yerr[ok],
             color=s.get('colour', SET_COLOURS['all']), alpha=0.8,
             label=s.get('name'), capsize=3, error_kw={'linewidth': 1})
      for g, pts in enumerate(s.get('points') or []):
        pts = [p for p in (pts or []) if p is not None]
        if pts:
          ax.scatter(x[g] + off + rng.uniform(-0.2, 0.2, len(pts)) * width,
                     pts, s=10, color='black', alpha=0.6, zorder=3,
                     linewidths=0)
    for line in panel.get('lines') or []:
      ax.axhline(float(line['y']), color=line.get('colour', 'black'),
                 linestyle=line.get('style', '--'), linewidth=1,
                 label=line.get('label'))
    ax.set_xlim(-0.75, len(groups) - 0.25)  # One group: not a full-width bar.
    ys = [float(line['y']) for line in panel.get('lines') or []]
    if ys:  # Reference lines outside the bars' range must still show.
      lo, hi = ax.get_ylim()
      pad = 0.05 * (max(hi, *ys) - min(lo, *ys))
      ax.set_ylim(min(lo, min(ys) - pad), max(hi, max(ys) + pad))
    if panel.get('ylim'):
      ax.set_ylim(*panel['ylim'])
    rotate = len(groups) > 3
    ax.set_xticks(x, list(groups), rotation=30 if rotate else 0,
                  ha='right' if rotate else 'center', fontsize=8)
    ax.set_title(panel.get('title', ''), fontsize=10)
    ax.set_ylabel(panel.get('ylabel', ''))
    ax.grid(axis='y', alpha=0.3)
    ax.legend(fontsize=7)
  fig.tight_layout()
  return _png(fig)
