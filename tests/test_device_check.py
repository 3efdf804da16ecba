"""The prepared GPU check runs end to end on CPU (--dry-run) and its JSON is sane.

The run imitates the GPU machine's image: tensorflow, tensorflow-datasets and
grain are made unimportable (a sitecustomize marks them missing), so the
check must need none of them. Numbers are only checked for being positive and
consistent with each other, never against a time.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_BLOCKER = '''
import sys
# As on the GPU image: these packages are not installed. A None entry makes
# `import x` raise ModuleNotFoundError and importlib.util.find_spec(x) return
# None, as for a missing package.
for _name in ('grain', 'tensorflow_datasets', 'tensorflow'):
  sys.modules[_name] = None
'''


def _has_torch() -> bool:
  try:
    import torch  # pylint: disable=g-import-not-at-top,unused-import
    return True
  except ImportError:
    return False


@pytest.fixture(scope='module')
def dry_run(tmp_path_factory):
  """Runs launch/device_check.sh --dry-run once; returns (json, markdown)."""
  tmp = tmp_path_factory.mktemp('device_check')
  site = tmp / 'site'
  site.mkdir()
  (site / 'sitecustomize.py').write_text(_BLOCKER)
  env = dict(os.environ, OUT=str(tmp / 'out'), PYTHON=sys.executable,
             PYTHONPATH=str(site), TMPDIR=str(tmp), JAX_PLATFORMS='cpu')
  proc = subprocess.run(['bash', os.path.join(ROOT, 'launch',
                                              'device_check.sh'), '--dry-run'],
                        env=env, capture_output=True, text=True, timeout=900,
                        check=False)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
  with open(tmp / 'out' / 'device_check.json') as f:
    result = json.load(f)
  with open(tmp / 'out' / 'device_check.md') as f:
    return result, f.read()


def _rate_ok(row):
  assert row['examples_per_s'] > 0 and row['ms_per_step'] > 0
  # examples/s = members x per-member rate = examples per step / step time.
  assert row['per_member_examples_per_s'] * row['members'] == pytest.approx(
      row['examples_per_s'], rel=1e-9)
  assert row['examples_per_s'] * row['ms_per_step'] / 1e3 == pytest.approx(
      row['members'] * 8, rel=1e-9)  # Dry-run batch: 8 per member.
  assert row['flops_per_step'] > 0
  assert row['pct_bf16_peak'] is None  # CPU: no tensor-core peak to quote.


@pytest.mark.slow
def test_dry_run_measures_every_train_step_variant(dry_run):
  result, _ = dry_run
  assert result['dry_run'] is True and result['skipped'] == []
  assert result['device']['backend'] == 'cpu'
  assert result['device']['matmul_bf16_tflops'] > 0
  grid = result['train_step']
  got = {(r['members'], r['strategy'], r['dtype'], r['fused']) for r in grid}
  assert got == {(1, 'unroll', 'float32', True), (2, 'vmap', 'float32', True),
                 (2, 'unroll', 'float32', True),
                 (2, 'unroll', 'float32', False)}
  for row in grid + result['many_members'] + result['heldout_members']:
    _rate_ok(row)
  # More members, more work per step: the cost analysis sees all of them.
  flops = {(r['members'], r['strategy']): r['flops_per_step'] for r in grid
           if r['fused']}
  assert flops[(2, 'unroll')] > 1.5 * flops[(1, 'unroll')]
  assert [r['members'] for r in result['many_members']] == [2, 4]
  assert [r['members'] for r in result['heldout_members']] == [2, 4]
  assert result['auto_strategy']['2'] in ('vmap', 'unroll')


@pytest.mark.slow
def test_dry_run_probe_and_study(dry_run):
  result, _ = dry_run
  probe = result['probe']
  assert probe['members'] == 2 and probe['examples'] == 96
  assert probe['examples_per_s'] > 0
  study = result['study']
  assert study['epochs_run'] == study['epochs_target'] == 2
  assert not study['extrapolated']
  assert len(study['epoch_seconds']) == 2 and study['wall_s'] > 0
  assert study['wall_s_for_target_epochs'] == pytest.approx(study['wall_s'])
  # Records of both members at every probe (3 in epoch 1, one per epoch).
  assert study['records_shape'] == [2, 5, 96]


@pytest.mark.slow
def test_dry_run_peer_and_markdown(dry_run):
  result, md = dry_run
  peer = result['peer']
  assert peer
  for name, row in peer.items():
    if _has_torch():
      assert row['examples_per_s'] > 0, row
      # Compared with the project's 1-member step of the same dtype, which
      # the dry run has for float32 only.
      if 'float32' in name:
        assert row['project_1_member_vs_this'] > 0
      else:
        assert 'project_1_member_vs_this' not in row
    else:
      assert 'error' in row
  assert '### Train step' in md and '| members | strategy |' in md
  assert 'Study' in md and 'Probe pass' in md
