"""Gathers every finished run under a workdir into one Markdown table beside the report's numbers.

  python -m experiments.report [--workdir checkpoints] [--out report.md]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

# Accuracy the study reports for its final runs (85/15 slice split, ImageNet init, 224 px).
REPORTED_ACCURACY = {'exp19': 0.96, 'exp20': 0.97}


def _fmt(value, ci=None) -> str:
  if value is None:
    return '—'
  text = f'{value:.3f}'
  return f'{text} [{ci[0]:.3f}, {ci[1]:.3f}]' if ci else text


def gather(workdir: Path) -> list[dict]:
  """Every `<workdir>/<experiment>/<run>/metrics.json`, sorted by experiment and run."""
  runs = []
  for path in sorted(workdir.glob('*/*/metrics.json')):
    metrics = json.loads(path.read_text())
    config_path = path.parent / 'config.json'
    config = json.loads(config_path.read_text())['config'] if config_path.exists() else {}
    runs.append({'experiment': path.parent.parent.name, 'run': path.parent.name, 'config': config, **metrics})
  return runs


def _optimizer(config: dict) -> str:
  if not config:
    return '?'
  optimizer = config.get('optimizer', 'sgd')  # runs older than the option used SGD
  text = f"{optimizer} lr {config['learning_rate']:g}"
  if optimizer == 'sgd':
    text += f" m {config['momentum']:g}"
  if config.get('lr_schedule', 'constant') != 'constant':
    text += f" {config['lr_schedule']}"
  if config.get('weight_decay'):
    text += f" wd {config['weight_decay']:g}"
  return text


def markdown(runs: list[dict]) -> str:
  """Classification runs in one table, segmentation runs in another."""
  classification = [r for r in runs if r.get('task', 'classify') == 'classify']
  segmentation = [r for r in runs if r.get('task') == 'segment']
  parts = []
  if classification:
    parts.append(_classification_table(classification))
  if segmentation:
    parts.append(_segmentation_table(segmentation))
  return '\n'.join(parts)


def _segmentation_table(runs: list[dict]) -> str:
  lines = ['| experiment | run | encoder | preprocess | px | init | split | epochs | optimizer | eval slices | '
           'Dice per volume | IoU per volume | Dice on tumor slices | false-positive rate (tumor-free slices) |',
           '|' + '---|' * 14]
  for r in runs:
    lines.append(f"| {r['experiment']} | {r['run']} | {r.get('arch', '?')} | {r.get('preprocess', '?')} | "
                 f"{r.get('image_size', '?')} | {r['init'].split(' ')[0]} | {r['split']} | {r.get('epochs', '?')} | "
                 f"{_optimizer(r['config'])} | {r.get('counts', {}).get('eval_slices', '?')} | "
                 f"{_fmt(r['dice_per_volume'])} | "
                 f"{_fmt(r['iou_per_volume'])} | {_fmt(r['dice_tumor_slices'])} | {_fmt(r['false_positive_rate'])} |")
  return '\n'.join(lines) + '\n'


def _classification_table(runs: list[dict]) -> str:
  lines = ['| experiment | run | model | strategy | preprocess | px | init | split | epochs | optimizer | eval slices | '
           'accuracy [95% CI] | balanced acc. | ROC AUC [95% CI] | sensitivity | specificity | report |',
           '|' + '---|' * 17]
  for r in runs:
    ci = r.get('confidence_95') or {}
    counts = r.get('counts', {})
    reported = REPORTED_ACCURACY.get(r['experiment'])
    lines.append(
        f"| {r['experiment']} | {r['run']} | {r.get('arch', '?')} | {r.get('strategy', '?')} | "
        f"{r.get('preprocess', '?')} | {r.get('image_size', '?')} | {r['init'].split(' ')[0]} | {r['split']} | "
        f"{r.get('epochs', '?')} | {_optimizer(r['config'])} | {counts.get('eval_slices', '?')} | "
        f"{_fmt(r['accuracy'], ci.get('accuracy'))} | "
        f"{_fmt(r['balanced_accuracy'])} | {_fmt(r['roc_auc'], ci.get('roc_auc'))} | {_fmt(r['sensitivity'])} | "
        f"{_fmt(r['specificity'])} | {f'{reported:.0%} accuracy' if reported else '—'} |")
  return '\n'.join(lines) + '\n'


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', default='checkpoints')
  parser.add_argument('--out', help='also write the table to this file')
  args = parser.parse_args(argv)
  runs = gather(Path(args.workdir))
  table = markdown(runs) if runs else f'no finished runs under {args.workdir}\n'
  print(table, end='')
  if args.out:
    Path(args.out).write_text(table)


if __name__ == '__main__':
  main()
