"""Damaged workdir files are named, repaired or set aside (issue 20).

Checkpoint bit flips, manifest damage, unreadable JSON outputs, an
unescaped workdir path in summary.md.
"""

import os
import re

from easyhard_jax.report import html as html_lib


def test_summary_markdown_escapes_the_workdir_path():
  hostile = '/tmp/<img src=x onerror=alert(1)>/*b*_[l](http://e)\n# H &amp;'
  text = html_lib.render_summary('Title', f'dataset x | workdir {hostile}',
                                 [('Findings', ['one'])], [])
  lines = text.splitlines()
  assert lines[2].startswith('dataset x | workdir /tmp/')
  assert '\\<img' in text and not re.search(r'(?<!\\)[<>]', text)
  assert '\\*b\\*\\_\\[l\\]' in text and '\\&amp;' in text
  assert [l for l in lines if l.startswith('# ')] == ['# Title']
  assert os.sep in lines[2]
