"""Rows, peak figures and the Markdown table of the device check."""

from __future__ import annotations

import math
from typing import Any

# Dense (no sparsity) bf16 tensor-core peaks from the vendors' spec sheets,
# in TFLOP/s, matched in order against jax's device_kind.
PEAK_BF16_TFLOPS = (
    ('H200', 989.4), ('GH200', 989.4), ('H100 PCIe', 756.0),
    ('H100 NVL', 835.0), ('H100', 989.4), ('H800', 989.4), ('B200', 2250.0),
    ('A100', 312.0), ('A800', 312.0), ('L40S', 362.0), ('L4', 121.0),
    ('A10G', 70.0), ('V100', 125.0),
)


def peak_bf16_tflops(device_kind: str) -> float | None:
  """The card's dense bf16 peak, or None where the kind is not listed."""
  for name, peak in PEAK_BF16_TFLOPS:
    if name.lower() in device_kind.lower():
      return peak
  return None


def rate_row(sec_per_step: float, examples_per_step: int, members: int,
             flops_per_step: float, peak_tflops: float | None,
             compile_s: float | None = None) -> dict[str, Any]:
  """Throughput figures of one timed program."""
  tflops = flops_per_step / sec_per_step / 1e12
  row = {'ms_per_step': 1e3 * sec_per_step,
         'examples_per_s': examples_per_step / sec_per_step,
         'per_member_examples_per_s': examples_per_step / members /
                                      sec_per_step,
         'flops_per_step': flops_per_step, 'tflops': tflops,
         'pct_bf16_peak': 100 * tflops / peak_tflops if peak_tflops else None}
  if compile_s is not None:
    row['compile_s'] = compile_s
  return row


def finite(obj):
  """The result with NaN / inf replaced by None (strict JSON)."""
  if isinstance(obj, float):
    return obj if math.isfinite(obj) else None
  if isinstance(obj, dict):
    return {k: finite(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [finite(v) for v in obj]
  return obj


def _f(x, fmt='{:,.0f}', none='-'):
  if x is None or (isinstance(x, float) and not math.isfinite(x)):
    return none
  return fmt.format(x)


def _rate_table(rows, first_cols) -> list[str]:
  head = [c for c, _ in first_cols] + [
      'ms/step', 'examples/s', 'per member ex/s', 'TFLOP/s', '% bf16 peak',
      'compile s']
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for r in rows:
    cells = [str(fn(r)) for _, fn in first_cols] + [
        _f(r.get('ms_per_step'), '{:.2f}'), _f(r.get('examples_per_s')),
        _f(r.get('per_member_examples_per_s')), _f(r.get('tflops'), '{:.3g}'),
        _f(r.get('pct_bf16_peak'), '{:.1f}%'),
        _f(r.get('compile_s'), '{:.0f}')]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return lines


def markdown(result: dict) -> str:
  """The check as Markdown: one header line, then one table per section."""
  d = result.get('device', {})
  s = result.get('sizes', {})
  out = [f"## Device check{' (dry run, CPU, toy sizes)' if result.get('dry_run') else ''}",
         '',
         f"{d.get('device_kind', '?')} ({d.get('backend', '?')}, "
         f"{d.get('devices', '?')} device(s), {d.get('host_cores', '?')} host "
         f"cores), jax {d.get('jax', '?')}, {result.get('date', '')}; "
         f"dense bf16 peak {_f(d.get('peak_bf16_tflops'), '{:.0f}')} TFLOP/s "
         f"(spec), bf16 matmul {_f(d.get('matmul_bf16_tflops'), '{:.3g}')} "
         f"TFLOP/s (measured). ResNet-18 width {s.get('width')}, "
         f"{'x'.join(map(str, s.get('shape', [])))}, batch {s.get('batch')} "
         'per member, fused per-example outputs; FLOPs from XLA cost '
         'analysis.', '']
  grid = result.get('train_step', [])
  if grid:
    out += ['### Train step', '']
    out += _rate_table(grid, [
        ('members', lambda r: r['members']),
        ('strategy', lambda r: r['strategy']),
        ('dtype', lambda r: r['dtype']),
        ('fused', lambda r: 'yes' if r['fused'] else 'no')])
    out.append('')
  peer = result.get('peer', {})
  if peer:
    out += ['### PyTorch peer (same network, batch, augmentation)', '',
            '| implementation | ms/step | examples/s | % bf16 peak | '
            'project (1 member, same dtype) / this |', '|---|---|---|---|---|']
    for name, r in peer.items():
      if 'examples_per_s' not in r:
        out.append(f"| {name} | {str(r.get('error', 'not run'))[:120]} | | | |")
        continue
      out.append(f"| {name} ({r.get('torch', '')}) | "
                 f"{_f(r['ms_per_step'], '{:.2f}')} | "
                 f"{_f(r['examples_per_s'])} | "
                 f"{_f(r.get('pct_bf16_peak'), '{:.1f}%')} | "
                 f"{_f(r.get('project_1_member_vs_this'), '{:.2f}x')} |")
    out.append('')
  probe = result.get('probe')
  if probe:
    out += [f"Probe pass: {_f(probe['examples_per_s'])} examples/s "
            f"({probe['members']} members x {probe['examples']:,} examples in "
            f"{probe['seconds']:.2f} s, eval batch {probe['batch']}; first "
            f"call with compilation {probe['first_call_s']:.1f} s).", '']
  for key, title in (('many_members', 'Many members in one program'),
                     ('heldout_members', 'Heldout members (each on its own '
                      'random half) in one program')):
    rows = result.get(key, [])
    if rows:
      out += [f"### {title} (width {s.get('many_width')}, vmap, bf16)", '']
      out += _rate_table(rows, [('members', lambda r: r['members'])])
      out.append('')
  study = result.get('study')
  if study:
    out += ['### Study (record stage, synthetic CIFAR-10 size)', '']
    for key, value in study.items():
      if isinstance(value, float):
        value = f'{value:,.1f}'
      elif isinstance(value, list) and value and isinstance(value[0], float):
        value = ', '.join(f'{v:.1f}' for v in value)
      out.append(f'- {key}: {value}')
    out.append('')
  if result.get('auto_strategy'):
    out += [f"Suggested `member_strategy='auto'` here: "
            f"{result['auto_strategy']}", '']
  if result.get('skipped'):
    out += ['Skipped (time budget): ' + ', '.join(result['skipped']), '']
  out.append(f"Total {result.get('elapsed_s', 0):.0f} s of a "
             f"{result.get('budget_s', 0):.0f} s budget.")
  return '\n'.join(out) + '\n'
