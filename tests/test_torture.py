"""The torture harness's cases that need no reference study, in-process.

launch/torture.py runs every case (corruption, config change, typo, bad
input, concurrency, two processes) against a finished digits_quick study;
these are its typo and bad-input cases, run here through ``runner.run`` on a
finished-looking workdir: each must stop before the lock or any deletion,
naming the field or file.
"""

import importlib.util
import os
import sys

import pytest

from conftest import ROOT

_spec = importlib.util.spec_from_file_location(
    'torture', os.path.join(ROOT, 'launch', 'torture.py'))
torture = importlib.util.module_from_spec(_spec)
sys.modules['torture'] = torture  # Its dataclasses look the module up.
_spec.loader.exec_module(torture)

FAST = [c for c in torture.CASES
        if not c.needs_reference and c.kind in ('typo', 'bad input')]


def test_the_fast_subset_covers_every_typo_and_bad_input_case():
  names = {c.name for c in FAST}
  assert len(FAST) >= 12 and 'typo_window_past_end' in names
  assert {c.kind for c in torture.CASES} == {
      'corruption', 'config change', 'typo', 'bad input', 'concurrency',
      'two processes'}


@pytest.mark.parametrize('case', FAST, ids=[c.name for c in FAST])
def test_case_holds(case, tmp_path):
  ctx = torture.Context(str(tmp_path), inprocess=True)
  held, observed = case.check(ctx)
  assert held, observed


def test_a_case_that_does_not_hold_is_reported(tmp_path):
  ctx = torture.Context(str(tmp_path), inprocess=True)
  check = torture._typo({'analysis.sets.method': 'bogus'}, 'no such words')
  held, observed = check(ctx)
  assert not held and 'rc 1' in observed and 'message:' in observed
