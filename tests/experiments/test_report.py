import json

from experiments import report


def write_run(root, experiment, run, metrics, config):
  folder = root / experiment / run
  folder.mkdir(parents=True)
  (folder / 'metrics.json').write_text(json.dumps(metrics))
  (folder / 'config.json').write_text(json.dumps({'config': config}))


def test_tables_beside_the_report(tmp_path, capsys):
  write_run(tmp_path, 'exp20', 'r1', {'task': 'classify', 'accuracy': 0.9, 'balanced_accuracy': 0.85, 'roc_auc': 0.95,
                                       'sensitivity': 0.8, 'specificity': 0.9, 'init': 'scratch (x)', 'split': 'patient',
                                       'arch': 'resnet18', 'epochs': 3, 'counts': {'eval_slices': 40},
                                       'confidence_95': {'accuracy': [0.8, 0.95]}},
            {'optimizer': 'sgd', 'learning_rate': 0.01, 'momentum': 0.5, 'lr_schedule': 'cosine', 'weight_decay': 5e-4})
  write_run(tmp_path, 'seg01', 'r1', {'task': 'segment', 'dice_per_volume': 0.75, 'iou_per_volume': 0.6,
                                       'dice_tumor_slices': 0.7, 'false_positive_rate': 0.05, 'init': 'scratch (x)',
                                       'split': 'patient', 'arch': 'resunet', 'preprocess': 'resize_flip_affine'},
            {'optimizer': 'adam', 'learning_rate': 0.001})
  report.main(['--workdir', str(tmp_path), '--out', str(tmp_path / 'table.md')])
  out = capsys.readouterr().out
  assert '| exp20 | r1 | resnet18 |' in out and '0.900 [0.800, 0.950]' in out and '97% accuracy' in out
  assert 'sgd lr 0.01 m 0.5 cosine wd 0.0005' in out
  assert '| seg01 | r1 | resunet | resize_flip_affine |' in out and '| 0.750 | 0.600 | 0.700 | 0.050 |' in out and 'adam lr 0.001' in out
  assert (tmp_path / 'table.md').read_text() == out
