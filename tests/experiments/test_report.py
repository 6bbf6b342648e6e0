import json

from experiments import report

SETTING = {'init': 'scratch (x)', 'split': 'patient', 'fold': None, 'epochs': 3, 'image_size': 128,
           'data': 'kaggle_3m at /data', 'counts': {'test_patients': 12}, 'selected_checkpoint': {'epoch': 2}}


def write_run(root, experiment, run, metrics, config, decision=None):
  folder = root / experiment / run
  folder.mkdir(parents=True)
  (folder / 'metrics.json').write_text(json.dumps(metrics))
  (folder / 'config.json').write_text(json.dumps({'config': config}))
  if decision is not None:
    (folder / 'decision.json').write_text(json.dumps(decision))


def test_tables_of_test_metrics_and_the_reference_on_its_own_line(tmp_path, capsys):
  """Catches the study's 97% shown as a column beside runs of another setting, and a run written
  before the train/validation/test protocol (no `test`) shown as if it were test-measured."""
  classification = {'task': 'classify', 'accuracy': 0.9, 'balanced_accuracy': 0.85, 'roc_auc': 0.95,
                    'sensitivity': 0.8, 'specificity': 0.9, 'arch': 'resnet18', 'strategy': 'finetune',
                    'confidence_95': {'accuracy': [0.8, 0.95]}, **SETTING}
  write_run(tmp_path, 'exp20', 'r1', {**classification, 'test': {}},
            {'optimizer': 'sgd', 'learning_rate': 0.01, 'momentum': 0.5, 'lr_schedule': 'cosine', 'weight_decay': 5e-4})
  write_run(tmp_path, 'exp20', 'old', classification, {'optimizer': 'sgd', 'learning_rate': 0.01, 'momentum': 0.5})
  write_run(tmp_path, 'seg01', 'r1', {'task': 'segment', 'dice_per_volume': 0.75, 'iou_per_volume': 0.6,
                                       'dice_tumor_slices': 0.7, 'false_positive_rate': 0.05, 'arch': 'resunet',
                                       'validation': {'dice_per_volume': 0.8},
                                       'test': {}, **SETTING, 'data': 'phantom (synthetic)'},
            {'optimizer': 'adam', 'learning_rate': 0.001})
  report.main(['--workdir', str(tmp_path), '--out', str(tmp_path / 'table.md')])
  out = capsys.readouterr().out
  assert '| exp20 | r1 | real | patient | scratch | 128 | 3 | sgd lr 0.01 m 0.5 cosine wd 0.0005 | 12 | 2 |' in out
  assert '| resnet18 | finetune | 0.900 [0.800, 0.950] |' in out
  assert '| exp20 | old |' not in out
  assert '| seg01 | r1 | phantom |' in out and '| resunet | 128 px | 0.800 | 0.750 | 0.600 | 0.700 | 0.050 |' in out
  reference = [line for line in out.splitlines() if '97%' in line]
  assert len(reference) == 1 and not reference[0].startswith('|') and 'slice' in reference[0]
  assert (tmp_path / 'table.md').read_text() == out


def segmentation_fold(fold, dice, false_positives, patients, tumor_slices, tumor_free_slices):
  """A segmentation run's metrics.json on one fold: its 256 px post-processed figures given, the
  model-resolution ones (test and validation) deliberately different (0.1) so that a table reading
  them shows."""
  figures = {'dice_per_volume': dice, 'iou_per_volume': dice - 0.1, 'dice_tumor_slices': dice - 0.05,
             'false_positive_rate': false_positives}
  return {'task': 'segment', 'arch': 'resunet', 'test': {}, **SETTING, 'fold': fold,
          'dice_per_volume': 0.1, 'iou_per_volume': 0.1, 'dice_tumor_slices': 0.1, 'false_positive_rate': 0.1,
          'native_postprocessed': figures, 'validation': {'dice_per_volume': 0.1},
          'counts': {'test_patients': patients, 'test_tumor_slices': tumor_slices,
                     'test_slices': tumor_slices + tumor_free_slices, 'validation_patients': 12}}


def test_five_folds_of_one_recipe_pool_over_all_their_test_patients(tmp_path, capsys):
  """Catches a plain mean of the five fold figures (folds here differ in size, so the pooled figure
  differs), the false-positive rate weighted by patients instead of tumor-free slices, the model's
  own-resolution figures (test or validation) shown instead of the 256 px post-processed ones, the
  validation Dice of the default mask rule shown instead of the chosen one's, the pooled row's
  validation figure missing or taken from test, a pooled row for a recipe missing a fold, and runs
  of two recipes pooled together."""
  config = {'optimizer': 'adam', 'learning_rate': 0.001, 'epochs': 30}
  sizes = [(10, 40, 60), (20, 80, 300), (10, 40, 60), (10, 40, 60), (10, 40, 60)]
  dice = [0.6, 0.9, 0.6, 0.6, 0.6]
  false_positives = [0.1, 0.0, 0.1, 0.1, 0.1]
  validation = [0.7, 0.8, 0.9, 0.6, 0.5]
  for fold, ((patients, tumor, free), d, fp, v) in enumerate(zip(sizes, dice, false_positives, validation)):
    write_run(tmp_path, 'seg01', f'fold{fold}', segmentation_fold(fold, d, fp, patients, tumor, free),
              {**config, 'fold': fold, 'run_name': None, 'workdir': f'/w{fold}'},
              {'validation_dice_per_volume_native': {'default_rule': 0.1, 'chosen_rule': v}})
  for fold in range(4):  # another recipe, fold 4 missing
    write_run(tmp_path, 'seg01', f'other{fold}', segmentation_fold(fold, 0.5, 0.2, 10, 40, 60),
              {**config, 'epochs': 5, 'fold': fold})
  write_run(tmp_path, 'seg01', 'other-fold4-of-a-third-recipe', segmentation_fold(4, 0.5, 0.2, 10, 40, 60),
            {**config, 'epochs': 7, 'fold': 4})
  report.main(['--workdir', str(tmp_path)])
  out = capsys.readouterr().out
  assert '| 256 px, post-processed | 0.800 | 0.900 | 0.800 | 0.850 | 0.000 |' in out
  pooled = [line for line in out.splitlines() if 'all 5 folds' in line]
  assert len(pooled) == 1 and 'fold0, fold1, fold2, fold3, fold4' in pooled[0], out
  # Dice per volume over 60 patients: (4 * 10 * 0.6 + 20 * 0.9) / 60 = 0.7; IoU 0.6; Dice on tumor
  # slices over 240 tumor slices: (160 * 0.55 + 80 * 0.85) / 240 = 0.65; false positives over 540
  # tumor-free slices: 240 * 0.1 / 540 = 0.0444. Validation: the folds' 12 patients each, mean 0.7.
  assert '| 60 | | | 256 px, post-processed | 0.700 | **0.700** | 0.600 | 0.650 | **0.044** |' in pooled[0], pooled
