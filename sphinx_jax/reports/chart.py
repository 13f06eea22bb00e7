"""Loss curves as inline SVG.

A line chart is axes, ticks and polylines: drawn here in a few lines rather
than with a plotting library. The loss axis is logarithmic (an inversion's
loss can fall by orders of magnitude, then creep), its ticks nice values
(every digit, 1, 2, 5 or 1 x 10^k) that bracket the data, so every curve
lies between labelled lines; the step axis is linear from 0.
"""

import html
import math
from typing import Sequence

COLORS = ('#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b',
          '#e377c2', '#17becf')
# Space around the plot for the tick labels and axis titles, in pixels.
_LEFT, _RIGHT, _TOP, _BOTTOM = 44, 14, 20, 30
# Up to this many points a series also gets a dot per point (one point
# alone draws no line).
_MAX_DOTS = 20


def _nice_step(x: float) -> float:
  """The smallest of 1, 2, 5 x 10^k at least `x`."""
  power = 10.0 ** math.floor(math.log10(x))
  return next(m * power for m in (1, 2, 5, 10) if m * power >= x * (1 - 1e-9))


def step_ticks(last: int, count: int = 5) -> list[float]:
  """0, s, 2s, ... up to the first multiple of a nice s (a whole number of
  steps) at least `last`."""
  step = _nice_step(max(last / count, 1))
  return [i * step for i in range(math.ceil(last / step - 1e-9) + 1)]


def loss_ticks(lo: float, hi: float, most: int = 5) -> list[float]:
  """Nice values for a log axis, from the one at or below `lo` to the one
  at or above `hi` (and above `lo`): the finest of every digit, 1, 2, 5 or
  1 x 10^k that gives at most `most` ticks (else decades)."""
  exponents = range(math.floor(math.log10(lo)) - 1,
                    math.floor(math.log10(hi)) + 2)
  for mantissas in (range(1, 10), (1, 2, 5), (1,)):
    values = sorted(float(f'{m}e{e}') for e in exponents for m in mantissas)
    below = max(v for v in values if v <= lo)
    above = min(v for v in values if v >= hi and v > below)
    ticks = [v for v in values if below <= v <= above]
    if len(ticks) <= most:
      break
  return ticks


def _label(value: float) -> str:
  return f'{value:g}'


def loss_chart(series: Sequence[tuple[str, Sequence[tuple[int, float]]]],
               width: int = 300, height: int = 160) -> str:
  """An <svg> of one or more (label, [(step, loss), ...]) curves, a legend
  when there are several. Points whose loss is not positive and finite
  cannot sit on a log axis and are left out."""
  series = [(label, [(s, v) for s, v in points if 0 < v < math.inf])
            for label, points in series]
  values = [v for _, points in series for _, v in points]
  if not values:
    return '<span class="muted">no loss recorded</span>'
  x_ticks = step_ticks(max(s for _, points in series for s, _ in points))
  y_ticks = loss_ticks(min(values), max(values))
  plot_w, plot_h = width - _LEFT - _RIGHT, height - _TOP - _BOTTOM
  log_lo, log_hi = math.log10(y_ticks[0]), math.log10(y_ticks[-1])
  x = lambda step: _LEFT + plot_w * step / x_ticks[-1]
  y = lambda loss: _TOP + plot_h * (log_hi - math.log10(loss)) / (log_hi -
                                                                   log_lo)
  parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" '
           f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           'font-family="sans-serif" font-size="10">',
           f'<text x="2" y="10">loss (log)</text>',
           f'<text x="{_LEFT + plot_w / 2:.2f}" y="{height - 2}" '
           'text-anchor="middle">step</text>']
  for tick in y_ticks:
    parts.append(f'<line x1="{_LEFT}" x2="{_LEFT + plot_w}" y1="{y(tick):.2f}" '
                 f'y2="{y(tick):.2f}" stroke="#ddd"/>'
                 f'<text class="y-tick" x="{_LEFT - 3}" y="{y(tick):.2f}" '
                 'text-anchor="end" dominant-baseline="middle">'
                 f'{_label(tick)}</text>')
  bottom = _TOP + plot_h
  for tick in x_ticks:
    parts.append(f'<line x1="{x(tick):.2f}" x2="{x(tick):.2f}" y1="{bottom}" '
                 f'y2="{bottom + 3}" stroke="#555"/>'
                 f'<text class="x-tick" x="{x(tick):.2f}" y="{bottom + 12}" '
                 f'text-anchor="middle">{_label(tick)}</text>')
  parts.append(f'<rect x="{_LEFT}" y="{_TOP}" width="{plot_w}" '
               f'height="{plot_h}" fill="none" stroke="#555"/>')
  for i, (label, points) in enumerate(series):
    color = COLORS[i % len(COLORS)]
    coords = [(x(s), y(v)) for s, v in points]
    parts.append(f'<polyline class="series" data-label="{html.escape(label)}" '
                 f'fill="none" stroke="{color}" stroke-width="1.5" points="'
                 + ' '.join(f'{a:.2f},{b:.2f}' for a, b in coords) + '"/>')
    if len(coords) <= _MAX_DOTS:
      parts += [f'<circle cx="{a:.2f}" cy="{b:.2f}" r="2" fill="{color}"/>'
                for a, b in coords]
    if len(series) > 1:
      parts.append(f'<text x="{_LEFT + plot_w - 4}" y="{_TOP + 11 + 11 * i}" '
                   f'text-anchor="end" fill="{color}">{html.escape(label)}'
                   '</text>')
  return ''.join(parts) + '</svg>'
