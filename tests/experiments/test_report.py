import json

from experiments import report

SETTING = {'init': 'scratch (x)', 'split': 'patient', 'fold': None, 'epochs': 3, 'image_size': 128,
           'data': 'kaggle_3m at /data', 'counts': {'test_patients': 12}, 'selected_checkpoint': {'epoch': 2}}


def write_run(root, experiment, run, metrics, config):
  folder = root / experiment / run
  folder.mkdir(parents=True)
  (folder / 'metrics.json').write_text(json.dumps(metrics))
  (folder / 'config.json').write_text(json.dumps({'config': config}))


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
                                       'test': {}, **SETTING, 'data': 'phantom (synthetic)'},
            {'optimizer': 'adam', 'learning_rate': 0.001})
  report.main(['--workdir', str(tmp_path), '--out', str(tmp_path / 'table.md')])
  out = capsys.readouterr().out
  assert '| exp20 | r1 | real | patient | scratch | 128 | 3 | sgd lr 0.01 m 0.5 cosine wd 0.0005 | 12 | 2 |' in out
  assert '| resnet18 | finetune | 0.900 [0.800, 0.950] |' in out
  assert '| exp20 | old |' not in out
  assert '| seg01 | r1 | phantom |' in out and '| resunet | 0.750 | 0.600 | 0.700 | 0.050 |' in out
  reference = [line for line in out.splitlines() if '97%' in line]
  assert len(reference) == 1 and not reference[0].startswith('|') and 'slice' in reference[0]
  assert (tmp_path / 'table.md').read_text() == out
