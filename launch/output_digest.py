"""sha256 of every output file of a workdir, for byte-identity checks.

  python launch/output_digest.py WORKDIR > before.txt
  ... change the code, rerun the study into WORKDIR2 ...
  python launch/output_digest.py WORKDIR2 > after.txt && diff before.txt after.txt

Refactors that do not change the science must leave a study's outputs
byte-identical (issue 21). Files that legitimately differ between two runs
of one commit are left out: wall-clock timings, logs, locks, TensorBoard
event files, checkpoints (orbax metadata carries timestamps) and the report's
HTML/PNG (figures embed a creation date); --all keeps every file.
"""

import argparse
import hashlib
import os
import sys

VOLATILE_NAMES = ('timings.json', 'run_log.jsonl', 'metrics.jsonl', '.lock')
VOLATILE_DIRS = ('tensorboard', 'checkpoints', 'analysis_checkpoints',
                 'report')


def digests(workdir: str, keep_all: bool = False) -> dict[str, str]:
  """{relative path: sha256 hex} of the workdir's files (sorted)."""
  out = {}
  for root, dirs, names in os.walk(workdir):
    rel_root = os.path.relpath(root, workdir)
    parts = [] if rel_root == '.' else rel_root.split(os.sep)
    if not keep_all and any(p in VOLATILE_DIRS for p in parts):
      continue
    dirs.sort()
    for name in sorted(names):
      if not keep_all and (name in VOLATILE_NAMES or name.endswith('.log')
                           or name.endswith('.lock')):
        continue
      path = os.path.join(root, name)
      h = hashlib.sha256()
      with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
          h.update(block)
      out[os.path.relpath(path, workdir)] = h.hexdigest()
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('workdir')
  p.add_argument('--all', action='store_true', help='keep volatile files')
  args = p.parse_args(argv)
  if not os.path.isdir(args.workdir):
    sys.exit(f'no such workdir: {args.workdir}')
  for rel, hexd in digests(args.workdir, args.all).items():
    print(f'{hexd}  {rel}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
