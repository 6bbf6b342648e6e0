"""Gathers every finished run under a workdir into Markdown tables of test-patient metrics.

  python -m experiments.report [--workdir checkpoints] [--out report.md]

One row per run: data (real or phantom), split, init, image size, number of test patients and
the test metrics of the checkpoint validation selected; segmentation runs at the slices' native
256x256 with the post-processing validation chose (what `jaxbrain predict` writes), where the run
measured it, beside the validation Dice that chose among the run's checkpoints and mask rules. Runs
of one recipe on all five folds of the 5-fold patient split get a row more: the figures over all
their test patients (each patient tested once) and the mean of the folds' validation Dice, the
figure on which recipes are compared (never the test column). The study's own published
accuracies stand on a separate reference line with their setting; they are not a column beside
runs of another setting.
"""
from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

from jaxbrain.data.splits import NUM_FOLDS
from jaxbrain.errors import Caution
from jaxbrain.folders import RunDir
from jaxbrain.runs import RunError, read_config

REFERENCE = ('Reference (the study, not measured here): ResNet18 fine-tune (exp20) 97% accuracy, ResNet50 '
             'fine-tune (exp19) 96%; ImageNet init, 224 px, random 85/15 split of slices (patients on both sides), '
             'no validation side.')


def _fmt(value, ci=None) -> str:
  if value is None:
    return '—'
  text = f'{value:.3f}'
  return f'{text} [{ci[0]:.3f}, {ci[1]:.3f}]' if ci else text


def gather(workdir: Path) -> list[dict]:
  """Every `<workdir>/<experiment>/<run>/metrics.json` written under the train/validation/test
  protocol (a `test` entry), with the run's decision.json, sorted by experiment and run; older runs
  are left out."""
  runs = []
  for path in sorted(workdir.glob(f'*/*/{RunDir(workdir).final_metrics.name}')):
    run = RunDir(path.parent)
    try:
      metrics = json.loads(path.read_text())
      config = read_config(run.path)[0].flat() if run.config.exists() else {}
      decision = json.loads(run.decision.read_text()) if run.decision.exists() else {}
    except (json.JSONDecodeError, UnicodeDecodeError, RunError) as e:
      warnings.warn(f'{path.parent}: damaged run files ({type(e).__name__}: {e}); left out', Caution, stacklevel=2)
      continue
    if 'test' not in metrics:
      continue
    runs.append({'experiment': path.parent.parent.name, 'run': path.parent.name, 'config': config,
                 'decision': decision, **metrics})
  return runs


def _optimizer(config: dict) -> str:
  if not config:
    return '?'
  optimizer = config.get('optimizer', 'sgd')
  text = f"{optimizer} lr {config['learning_rate']:g}"
  if optimizer == 'sgd':
    text += f" m {config['momentum']:g}"
  if config.get('lr_schedule', 'constant') != 'constant':
    text += f" {config['lr_schedule']}"
  if config.get('weight_decay'):
    text += f" wd {config['weight_decay']:g}"
  return text


def _setting(r: dict) -> str:
  """The columns every table shares: run, data, split, init, px, epochs, optimizer, test patients."""
  data = 'phantom' if str(r.get('data', '')).startswith('phantom') else 'real'
  split = r['split'] + (f" fold {r['fold']}" if r.get('fold') is not None else '')
  if r.get('member') is not None:  # an ensemble member's "test" figures are the decision set's
    split += f" member {r['member']} (figures on the decision set, not test)"
  return (f"| {r['experiment']} | {r['run']} | {data} | {split} | {r['init'].split(' ')[0]} | {r.get('image_size', '?')} | "
          f"{r.get('epochs', '?')} | {_optimizer(r['config'])} | {r.get('counts', {}).get('test_patients', '?')} | "
          f"{(r.get('selected_checkpoint') or {}).get('epoch', '?')} |")


SETTING_HEADER = '| experiment | run | data | split | init | px | epochs | optimizer | test patients | selected epoch |'


def markdown(runs: list[dict]) -> str:
  """Classification runs in one table, segmentation runs in another, then the reference line."""
  classification = [r for r in runs if r.get('task', 'classify') == 'classify']
  segmentation = [r for r in runs if r.get('task') == 'segment']
  parts = ['Test-patient metrics (the checkpoint selected on validation, evaluated once on test; 95% '
           'patient-bootstrap intervals where there are at least 5 test patients).\n']
  if classification:
    parts.append(_classification_table(classification))
  if segmentation:
    parts.append(_segmentation_table(segmentation))
  parts.append(REFERENCE + '\n')
  return '\n'.join(parts)


def _segmentation_figures(r: dict) -> tuple[str, dict, float | None]:
  """(where measured, test figures, validation Dice per volume) of a segmentation run: at 256x256
  post-processed by the rule validation chose where the run measured that, else (older runs) as the
  model gives them at its own size; the validation figure measured the same way, None if not stored."""
  if 'native_postprocessed' in r:
    validation = r.get('decision', {}).get('validation_dice_per_volume_native', {}).get('chosen_rule')
    return '256 px, post-processed', r['native_postprocessed'], validation
  return f"{r.get('image_size', '?')} px", r, r.get('validation', {}).get('dice_per_volume')


# How each segmentation figure pools over folds: a mean over this count of each fold's test set.
POOLED_OVER = {'dice_per_volume': 'test_patients', 'iou_per_volume': 'test_patients',
               'dice_tumor_slices': 'test_tumor_slices', 'false_positive_rate': 'test_tumor_free_slices'}


def fold_means(runs: list[dict]) -> list[dict]:
  """For each recipe run on every fold of the 5-fold patient split (runs whose configs differ only
  in fold, run name and workdir), its segmentation figures over all the folds' test patients: each
  fold's figure weighted by what it averages (patients, tumor slices, tumor-free slices), which is
  the figure over the pooled test sets exactly. Recipes missing a fold, or with a fold twice, get none."""
  groups = {}
  for r in runs:
    if r.get('fold') is None or r.get('task') != 'segment' or not r['config']:
      continue
    key = (r['experiment'], json.dumps({k: v for k, v in r['config'].items() if k not in ('fold', 'run_name', 'workdir')},
                                       sort_keys=True))
    groups.setdefault(key, []).append(r)
  pooled = []
  for (experiment, _), folds in groups.items():
    if sorted(r['fold'] for r in folds) != list(range(NUM_FOLDS)):
      continue
    where = {_segmentation_figures(r)[0] for r in folds}
    validation = [_segmentation_figures(r)[2] for r in folds]
    weights = [r['counts'].get('validation_patients', 0) for r in folds]
    figures = {'validation_dice_per_volume': None if None in validation or not sum(weights) else
               sum(w * v for w, v in zip(weights, validation)) / sum(weights)}
    for key, count in POOLED_OVER.items():
      weights = [_fold_counts(r)[count] for r in folds]
      figures[key] = sum(w * _segmentation_figures(r)[1][key] for w, r in zip(weights, folds)) / sum(weights)
    pooled.append({'experiment': experiment, 'runs': [r['run'] for r in sorted(folds, key=lambda r: r['fold'])],
                   'where': where.pop() if len(where) == 1 else 'mixed', 'test_patients': sum(
                       _fold_counts(r)['test_patients'] for r in folds), **figures})
  return pooled


def _fold_counts(r: dict) -> dict:
  counts = r['counts']
  return {**counts, 'test_tumor_free_slices': counts['test_slices'] - counts['test_tumor_slices']}


def _segmentation_table(runs: list[dict]) -> str:
  lines = [SETTING_HEADER + ' encoder | measured at | validation Dice per volume (chooses) | Dice per volume [95% CI] | '
           'IoU per volume | Dice on tumor slices | false-positive rate (tumor-free slices) |', '|' + '---|' * 17]
  for r in runs:
    where, figures, validation = _segmentation_figures(r)
    ci = figures.get('confidence_95') or {}
    lines.append(f"{_setting(r)} {r.get('arch', '?')} | {where} | {_fmt(validation)} | "
                 f"{_fmt(figures['dice_per_volume'], ci.get('dice_per_volume'))} | {_fmt(figures['iou_per_volume'])} | "
                 f"{_fmt(figures['dice_tumor_slices'])} | {_fmt(figures['false_positive_rate'], ci.get('false_positive_rate'))} |")
  for m in fold_means(runs):
    lines.append(f"| {m['experiment']} | **all {NUM_FOLDS} folds** ({', '.join(m['runs'])}) | | | | | | | "
                 f"{m['test_patients']} | | | {m['where']} | {_fmt(m['validation_dice_per_volume'])} | **{_fmt(m['dice_per_volume'])}** | "
                 f"{_fmt(m['iou_per_volume'])} | {_fmt(m['dice_tumor_slices'])} | **{_fmt(m['false_positive_rate'])}** |")
  return '\n'.join(lines) + '\n'


def _classification_table(runs: list[dict]) -> str:
  lines = [SETTING_HEADER + ' model | strategy | accuracy [95% CI] | balanced acc. | ROC AUC [95% CI] | '
           'sensitivity | specificity |', '|' + '---|' * 17]
  for r in runs:
    ci = r.get('confidence_95') or {}
    lines.append(
        f"{_setting(r)} {r.get('arch', '?')} | {r.get('strategy', '?')} | {_fmt(r['accuracy'], ci.get('accuracy'))} | "
        f"{_fmt(r['balanced_accuracy'])} | {_fmt(r['roc_auc'], ci.get('roc_auc'))} | {_fmt(r['sensitivity'])} | "
        f"{_fmt(r['specificity'])} |")
  return '\n'.join(lines) + '\n'


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog='python -m experiments.report', description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', default='checkpoints', help='the runs\' root (default: checkpoints)')
  parser.add_argument('--out', help='also write the tables to this file')
  args = parser.parse_args(argv)
  runs = gather(Path(args.workdir))
  table = markdown(runs) if runs else f'no finished runs under {args.workdir}\n'
  print(table, end='')
  if args.out:
    Path(args.out).write_text(table)


if __name__ == '__main__':
  main()
