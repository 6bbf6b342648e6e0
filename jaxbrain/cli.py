"""The `jaxbrain` command line: `jaxbrain data DIR`, `jaxbrain phantom OUT`."""
from __future__ import annotations

import argparse
import json
import sys

from jaxbrain.data import kaggle3m
from jaxbrain.data.phantom import write_phantom


def _data(args) -> int:
  summary = kaggle3m.summarize(args.dir, progress=not args.json)
  if args.json:
    print(json.dumps(summary))
    return 0
  print(f'{summary["root"]}: {summary["patients"]} patients, {summary["slices"]} slices, '
        f'{summary["tumor_slices"]} with tumor ({", ".join(summary["formats"])})')
  for code, counts in summary['institutions'].items():
    print(f'  institution {code}: {counts["patients"]} patients, {counts["slices"]} slices, '
          f'{counts["tumor_slices"]} with tumor')
  for channels, count in summary['channels'].items():
    print(f'  {count} patients with {channels}')
  return 0


def _phantom(args) -> int:
  root = write_phantom(args.out, n_patients=args.patients, seed=args.seed, image_format=args.format)
  print(f'wrote {args.patients} synthetic patients to {root}')
  return 0


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='jaxbrain', description=__doc__)
  commands = parser.add_subparsers(dest='command', required=True)
  data = commands.add_parser('data', help='validate a kaggle_3m tree and summarize it')
  data.add_argument('dir', help='the kaggle_3m folder (patient folders TCGA_<inst>_<id>_<date>/)')
  data.add_argument('--json', action='store_true', help='print one JSON object instead of text')
  data.set_defaults(run=_data)
  phantom = commands.add_parser('phantom', help='write a synthetic dataset in the kaggle_3m layout')
  phantom.add_argument('out', help='folder to create')
  phantom.add_argument('--patients', type=int, default=10)
  phantom.add_argument('--seed', type=int, default=0)
  phantom.add_argument('--format', choices=('tif', 'png'), default='tif')
  phantom.set_defaults(run=_phantom)
  return parser


def main(argv: list[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    return args.run(args)
  except (kaggle3m.DataError, FileExistsError) as e:
    print(f'jaxbrain {args.command}: error: {e}', file=sys.stderr)
    return 2


if __name__ == '__main__':
  sys.exit(main())
