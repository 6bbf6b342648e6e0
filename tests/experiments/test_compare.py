"""experiments.compare: two runs' test predictions and the paired interval of their difference."""
import json

import pytest

from experiments import compare
from jaxbrain.files import write_csv

COLUMNS = ('path', 'patient', 'slice', 'probability', 'label', 'truth')


def _predictions(path, probabilities, truths=None, patients=None):
  truths = truths or [i % 2 for i in range(len(probabilities))]
  patients = patients or [f'P{i % 6}' for i in range(len(probabilities))]
  write_csv(path, [{'path': f'{p}/{i}.png', 'patient': p, 'slice': i, 'probability': q, 'label': int(q >= 0.5),
                    'truth': t} for i, (q, t, p) in enumerate(zip(probabilities, truths, patients))], COLUMNS)
  return path


def test_compare_prints_both_runs_and_their_difference(tmp_path, capsys):
  """Catches metrics of A and B swapped, or a difference that is not B - A."""
  a = _predictions(tmp_path / 'a.csv', [0.4, 0.45] * 12)  # every slice called tumor-free: accuracy 0.5
  b = _predictions(tmp_path / 'b.csv', [0.2, 0.8] * 12)  # same ranking, right side of 0.5: accuracy 1
  compare.main([str(a), str(b), '--samples', '50'])
  result = json.loads(capsys.readouterr().out.splitlines()[-1])
  assert result['metrics_a']['accuracy'] == 0.5 and result['metrics_b']['accuracy'] == 1.0
  assert result['b_minus_a']['difference']['accuracy'] == 0.5 and result['b_minus_a']['difference']['roc_auc'] == 0


def test_compare_refuses_predictions_of_other_slices_or_truths(tmp_path):
  """Catches a comparison of runs on different test patients (another split seed), which would pair
  unrelated slices."""
  a = _predictions(tmp_path / 'a.csv', [0.4, 0.6] * 12)
  with pytest.raises(compare.CompareError, match='different slices'):
    compare.compare(a, _predictions(tmp_path / 'b.csv', [0.4, 0.6] * 11))
  with pytest.raises(compare.CompareError, match='truth'):
    compare.compare(a, _predictions(tmp_path / 'c.csv', [0.4, 0.6] * 12, truths=[1] * 24))


def test_compare_scores_predict_folders_as_evaluate_does(trained_runs, phantom_runs_data, tmp_path):
  """Two `jaxbrain predict` outputs (the segmenter alone; the classifier with it) against --truth:
  each side's figures equal `jaxbrain evaluate`'s (accuracy of the `label` column, ROC AUC,
  per-volume Dice), and a side compared with itself differs by exactly 0. Catches accuracy taken
  at probability 0.5 instead of the decisions as made, Dice pooled over slices instead of per
  volume, and sides resampled apart."""
  from jaxbrain.localize.evaluate import evaluate
  from jaxbrain.localize.predict import predict

  classifier, segmenter = trained_runs
  predict([phantom_runs_data], None, tmp_path / 'seg', seg_run_dir=segmenter, progress=False)
  predict([phantom_runs_data], classifier, tmp_path / 'pair', seg_run_dir=segmenter, progress=False)
  result = compare.compare(tmp_path / 'seg', tmp_path / 'pair', samples=100, truth_dir=phantom_runs_data)
  for side, folder in (('metrics_a', 'seg'), ('metrics_b', 'pair')):
    expected = evaluate(tmp_path / folder, phantom_runs_data, bootstrap_samples=0)
    for key in compare.KEYS:
      assert result[side][key] == pytest.approx(expected['detection'][key]), (folder, key)
    assert result[side]['dice_per_volume'] == pytest.approx(expected['segmentation']['dice_per_volume']['mean'])
  itself = compare.compare(tmp_path / 'seg', tmp_path / 'seg', samples=100, truth_dir=phantom_runs_data)['b_minus_a']
  assert all(v == 0 for v in itself['difference'].values()) and set(itself['difference']) == {*compare.KEYS, 'dice_per_volume'}
  assert all(interval == [0.0, 0.0] for interval in itself['confidence_95'].values())
  with pytest.raises(compare.CompareError, match='--truth'):
    compare.compare(tmp_path / 'seg', tmp_path / 'pair')
