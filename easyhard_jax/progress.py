"""A dependency-free progress bar with rate and ETA, drawn only on a TTY.

    bar = Progress(total=50_000, desc='cnn epoch 3')
    for batch in batches:
      ...
      bar.update(len(batch))
    bar.close()

draws, on one line of stderr rewritten in place,

    cnn epoch 3  42% |########            | 21000/50000 ex  3512 ex/s  ETA 0:08

When the stream is not a terminal (CI, a log file, a pipe), nothing is
printed at all: logs get one line per epoch from the callers' logging, not a
line per redraw.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO


def format_duration(seconds: float) -> str:
  """'h:mm:ss' or 'm:ss'; '?' for an unknown (infinite or NaN) duration."""
  if not seconds >= 0 or seconds == float('inf'):
    return '?'
  s = int(round(seconds))
  h, rem = divmod(s, 3600)
  m, s = divmod(rem, 60)
  return f'{h}:{m:02d}:{s:02d}' if h else f'{m}:{s:02d}'


def format_count(n: float) -> str:
  """A compact count: 950, 12.3k, 4.56M."""
  for div, suffix in ((1e9, 'G'), (1e6, 'M'), (1e3, 'k')):
    if abs(n) >= div:
      return f'{n / div:.3g}{suffix}'
  return f'{n:.4g}' if isinstance(n, float) else str(n)


class Progress:
  """A progress bar with examples/s and ETA on a TTY; silent elsewhere.

  Attributes:
    total: the count at completion (0 or None: unknown, no percentage/ETA).
    n: the count so far.
    enabled: whether anything is drawn (the stream is a TTY).
  """

  def __init__(self, total: int | None, desc: str = '', unit: str = 'ex', *,
               stream: TextIO | None = None, min_interval: float = 0.1,
               width: int = 24, clock: Callable[[], float] = time.monotonic):
    """Starts the clock.

    Args:
      total: expected final count; None or 0 if unknown.
      desc: text before the bar.
      unit: unit of the count, shown after it and in the rate.
      stream: where to draw; default sys.stderr (looked up now, so tests
        that swap sys.stderr work).
      min_interval: seconds between redraws; updates in between only count.
      width: bar width in characters.
      clock: a monotonic seconds clock (injectable for tests).
    """
    self.total = int(total) if total else 0
    self.desc, self.unit = desc, unit
    self.stream = sys.stderr if stream is None else stream
    self.min_interval, self.width, self.clock = min_interval, width, clock
    isatty = getattr(self.stream, 'isatty', None)
    try:
      self.enabled = bool(isatty and isatty())
    except (ValueError, OSError):  # A closed stream.
      self.enabled = False
    self.n = 0
    self._start = self._last_draw = clock()
    self._last_len = 0
    self._closed = False

  def rate(self) -> float:
    """Units per second since the start (0 before any time passed)."""
    elapsed = self.clock() - self._start
    return self.n / elapsed if elapsed > 0 else 0.0

  def line(self) -> str:
    """The text of the bar as it would be drawn now."""
    rate = self.rate()
    parts = [self.desc] if self.desc else []
    if self.total:
      frac = min(self.n / self.total, 1.0)
      filled = int(frac * self.width)
      parts.append(f'{frac:4.0%} |{"#" * filled}{" " * (self.width - filled)}|'
                   f' {self.n}/{self.total} {self.unit}')
    else:
      parts.append(f'{self.n} {self.unit}')
    parts.append(f'{format_count(round(rate, 1))} {self.unit}/s')
    if self.total:
      left = (self.total - self.n) / rate if rate > 0 else float('inf')
      parts.append(f'ETA {format_duration(max(left, 0.0))}')
    else:
      parts.append(f'elapsed {format_duration(self.clock() - self._start)}')
    return '  '.join(parts)

  def _draw(self) -> None:
    text = self.line()
    pad = ' ' * max(self._last_len - len(text), 0)  # Erase a longer old line.
    self.stream.write('\r' + text + pad)
    self.stream.flush()
    self._last_len = len(text)
    self._last_draw = self.clock()

  def update(self, n: int = 1) -> None:
    """Adds ``n`` to the count and redraws if ``min_interval`` has passed.

    Args:
      n: units done since the last call.
    """
    self.n += int(n)
    if not self.enabled or self._closed:
      return
    if (self.clock() - self._last_draw >= self.min_interval or
        (self.total and self.n >= self.total)):
      self._draw()

  def close(self) -> None:
    """Draws the final state and ends the line; later calls do nothing."""
    if self._closed:
      return
    self._closed = True
    if self.enabled:
      self._draw()
      self.stream.write('\n')
      self.stream.flush()

  def __enter__(self) -> 'Progress':
    return self

  def __exit__(self, *exc) -> None:
    self.close()
