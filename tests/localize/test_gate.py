"""`jaxbrain gate`: the detect-then-localize gate, chosen on validation, applied by predict."""
import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from jaxbrain import cli
from jaxbrain.localize.gate import choose_and_measure
from jaxbrain.localize.predict import predict
from jaxbrain.decisions import GATE_THRESHOLDS, MARGIN
from jaxbrain.runs import RunError
from tests.localize.helpers import store_gate


def _rows(folder):
  with open(folder / 'predictions.csv') as f:
    return list(csv.DictReader(f))


def test_gate_is_chosen_on_validation_stored_and_measured(trained_runs, phantom_runs_data, tmp_path, capsys):
  """Catches: a stored gate that is not the best of its validation table (first on a tie; no gate
  unless the best gains MARGIN over it), a gate
  file predict cannot find, and pipeline figures missing beside the segmenter alone's."""
  classifier, segmenter = trained_runs
  seg = shutil.copytree(segmenter, tmp_path / 'seg')
  assert cli.main(['gate', '--run', str(classifier), '--seg-run', str(seg), '--data-dir', str(phantom_runs_data),
                   '--bootstrap-samples', '0']) == 0
  printed = capsys.readouterr().out
  assert 'segmenter alone' in printed and 'detection_accuracy' in printed
  stored = json.loads(next((seg / 'gates').glob('*.json')).read_text())
  assert stored['gate'] in GATE_THRESHOLDS and len(stored['validation']) == len(GATE_THRESHOLDS)
  best = max(stored['validation'], key=lambda row: row['dice_per_volume'])  # max keeps the first of equals
  if best['dice_per_volume'] < stored['validation'][0]['dice_per_volume'] + MARGIN:  # row 0: no gate
    best = stored['validation'][0]
  assert stored['gate'] == best['gate']
  for part in ('pipeline', 'segmenter_alone'):
    assert 0 <= stored['test'][part]['dice_per_volume'] <= 1 and 'detection_accuracy' in stored['test'][part]
  if stored['gate'] is None:
    assert stored['test']['pipeline'] == stored['test']['segmenter_alone']


def test_predict_gates_masks_with_the_stored_gate(trained_runs, phantom_png, tmp_path):
  """Catches: predict ignoring the stored gate (0.99 must empty the masks of every slice below it),
  gating without a stored gate at anything but the classifier's own label, or silently (a warning
  names `jaxbrain gate`), and a stored 'no gate'
  that still gates (the masks must equal the segmenter's alone)."""
  classifier, segmenter = trained_runs
  seg = shutil.copytree(segmenter, tmp_path / 'seg')
  predict([phantom_png], None, tmp_path / 'alone', seg_run_dir=seg, progress=False)
  alone = {r['path']: int(r['tumor_pixels']) for r in _rows(tmp_path / 'alone')}
  with pytest.warns(UserWarning, match='no gate was chosen'):
    predict([phantom_png], classifier, tmp_path / 'default', seg_run_dir=seg, progress=False)
  for row in _rows(tmp_path / 'default'):
    assert int(row['tumor_pixels']) == (alone[row['path']] if row['label'] == '1' else 0)
  for gate in (0.99, None):
    store_gate(classifier, seg, gate)
    out = tmp_path / f'gate_{gate}'
    predict([phantom_png], classifier, out, seg_run_dir=seg, progress=False)
    for row in _rows(out):
      kept = gate is None or float(row['probability']) >= gate
      assert int(row['tumor_pixels']) == (alone[row['path']] if kept else 0)
  assert any(alone.values())


def test_runs_of_different_splits_are_refused(trained_runs, phantom_runs_data, tmp_path):
  """Catches: a gate chosen for runs trained on different patients (the classifier's validation
  patients could be the segmenter's training patients)."""
  classifier, segmenter = trained_runs
  other = shutil.copytree(classifier, tmp_path / 'cls')
  split = json.loads((other / 'split.json').read_text())
  split['train'].append(split['validation'].pop())
  (other / 'split.json').write_text(json.dumps(split))
  with pytest.raises(RunError, match='split.json differ in train'):
    choose_and_measure(other, segmenter, phantom_runs_data, bootstrap_samples=0)


def test_the_choices_read_no_test_patient(trained_runs, phantom_runs_data, tmp_path, monkeypatch):
  """Catches a gate or a detector chosen on the test patients (or on all patients): with every test
  patient's images inverted, the test figures change but the gate, the detector and the validation
  tables they were chosen from are the same. (The command refuses data other than the runs',
  `runs.check_data`; the check is lifted here, where the data differs on purpose.)"""
  monkeypatch.setattr('jaxbrain.localize.gate.check_data', lambda *_: None)
  classifier, segmenter = trained_runs
  altered = shutil.copytree(phantom_runs_data, tmp_path / 'kaggle_3m')
  for patient in json.loads((classifier / 'split.json').read_text())['test']:
    for path in altered.glob(f'{patient}_*/*.png'):
      if not path.stem.endswith('_mask'):
        Image.fromarray(255 - np.asarray(Image.open(path))).save(path)
  results = [choose_and_measure(classifier, shutil.copytree(segmenter, tmp_path / name), data, bootstrap_samples=0)
             for name, data in (('seg', phantom_runs_data), ('seg_altered', altered))]
  for key in ('gate', 'validation', 'detector', 'detector_validation'):
    assert results[0][key] == results[1][key], key
  assert results[0]['test'] != results[1]['test']
