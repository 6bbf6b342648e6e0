"""experiments.scores: a mask-head run's checkpoint scored three ways on its validation and test patients."""
import json
import shutil

import pytest

from experiments import scores


def test_three_scores_of_a_trained_run(trained_runs, phantom_runs_data, tmp_path, capsys):
  """Catches the tool failing on a real run (a helper it reads renamed or changed), a score left
  out, and a mean row that is not the runs' mean (two copies of one run must give its own row);
  and a segmentation run accepted in place of a classifier."""
  classifier, segmenter = trained_runs
  copy = shutil.copytree(classifier, tmp_path / 'copy')
  scores.main([str(classifier), str(copy), '--data-dir', str(phantom_runs_data)])
  *rows, last = capsys.readouterr().out.strip().splitlines()
  results = json.loads(last)[str(classifier)]
  for part in ('validation', 'test'):
    assert set(results[part]) == set(scores.SCORES)
    assert all(0 <= figures['roc_auc'] <= 1 for figures in results[part].values())
  own, mean = rows[2].split('|')[2:], rows[4].split('|')[2:]
  assert rows[4].startswith('| mean |') and own == mean
  with pytest.raises(SystemExit):
    scores.main([str(segmenter), '--data-dir', str(phantom_runs_data)])
