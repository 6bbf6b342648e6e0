"""`jaxbrain evaluate` on hand-made predict outputs over the phantom's true masks, and on a
segmenter's predict output."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxbrain import cli
from jaxbrain.data import kaggle3m
from jaxbrain.metrics import dice, hausdorff95


def _fake_predict_output(records, out, mask_of):
  """A folder laid out as `jaxbrain predict --seg-run` writes it, with masks from `mask_of(record)`."""
  (out / 'masks').mkdir(parents=True)
  rows = []
  for record in records:
    mask = mask_of(record)
    Image.fromarray(mask.astype(np.uint8) * 255).save(out / 'masks' / f'{record.image_path.stem}_mask.png')
    rows.append({'path': str(record.image_path), 'patient': record.patient, 'slice': record.slice,
                 'probability': 0.9 if mask.any() else 0.1, 'label': int(mask.any()), 'tumor_pixels': int(mask.sum())})
  with open(out / 'predictions.csv', 'w', newline='') as f:
    writer = csv.DictWriter(f, list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)


def test_evaluate_scores_each_volume_at_native_size(phantom_png, tmp_path, capsys):
  """Three patients: predicted exactly, shifted by 4 pixels, and predicted empty. Catches per-slice
  instead of per-volume Dice, a worst-patient list out of order, an HD95 that is not the volume's
  (3D) one, a one-side-empty volume averaged into the HD95 mean, and output that is not one JSON
  object on the last line."""
  records = kaggle3m.scan(phantom_png)
  patients = sorted({r.patient for r in records})[:3]
  records = [r for r in records if r.patient in patients]
  exact, shifted, empty = patients
  truth = lambda r: kaggle3m.read_mask(r.mask_path).astype(bool)  # noqa: E731
  mask_of = {exact: truth, shifted: lambda r: np.roll(truth(r), 4, axis=1), empty: lambda r: np.zeros((256, 256), bool)}
  _fake_predict_output(records, tmp_path / 'pred', lambda r: mask_of[r.patient](r))
  assert cli.main(['evaluate', str(tmp_path / 'pred'), '--truth', str(phantom_png)]) == 0
  out = capsys.readouterr().out.strip().splitlines()
  result = json.loads(out[-1])
  seg = result['segmentation']
  volume = lambda p, f: np.stack([f(r) for r in records if r.patient == p])  # noqa: E731
  expected_dice = dice(volume(shifted, mask_of[shifted]), volume(shifted, truth))
  assert seg['per_volume'][exact]['dice'] == 1.0 and seg['per_volume'][exact]['hd95'] == 0.0
  assert seg['per_volume'][shifted]['dice'] == pytest.approx(expected_dice)
  assert seg['per_volume'][shifted]['hd95'] == pytest.approx(
      hausdorff95(volume(shifted, mask_of[shifted]), volume(shifted, truth)))
  assert seg['dice_per_volume']['mean'] == pytest.approx((1.0 + expected_dice + 0.0) / 3)
  assert [w['patient'] for w in seg['dice_per_volume']['worst']] == [empty, shifted, exact]
  assert seg['per_volume'][empty]['hd95'] is None and seg['hd95_per_volume']['volumes_with_one_side_empty'] == 1
  assert seg['hd95_per_volume']['mean'] == pytest.approx(seg['per_volume'][shifted]['hd95'] / 2)
  assert result['tumor_slices'] == sum(truth(r).any() for r in records)


def test_evaluate_refuses_slices_it_has_no_truth_for(phantom_png, phantom_tif, tmp_path, capsys):
  """Catches predictions silently scored against a tree that does not hold them."""
  records = kaggle3m.scan(phantom_tif)[:3]
  _fake_predict_output(records, tmp_path / 'pred', lambda r: np.zeros((256, 256), bool))
  assert cli.main(['evaluate', str(tmp_path / 'pred'), '--truth', str(phantom_png)]) == 2
  assert 'no slice of that name' in capsys.readouterr().err


def test_several_outputs_are_scored_as_one_set_of_patients(phantom_tif, tmp_path, capsys):
  """Six patients (two exact, two shifted, two empty) predicted into two folders score exactly as
  the same predictions in one folder, intervals included. Catches a second folder ignored or its
  masks looked up in the first, intervals over fewer than five patients, and intervals missing
  (or not bracketing the mean) where there are enough patients."""
  records = kaggle3m.scan(phantom_tif)
  patients = sorted({r.patient for r in records})[:6]
  records = [r for r in records if r.patient in patients]
  truth = lambda r: kaggle3m.read_mask(r.mask_path).astype(bool)  # noqa: E731
  kind = {p: ('exact', 'shifted', 'empty')[i % 3] for i, p in enumerate(patients)}
  mask_of = lambda r: {'exact': truth(r), 'shifted': np.roll(truth(r), 4, axis=1),  # noqa: E731
                       'empty': np.zeros((256, 256), bool)}[kind[r.patient]]
  _fake_predict_output(records, tmp_path / 'all', mask_of)
  _fake_predict_output([r for r in records if r.patient in patients[:3]], tmp_path / 'a', mask_of)
  _fake_predict_output([r for r in records if r.patient in patients[3:]], tmp_path / 'b', mask_of)
  results = []
  for folders in (['all'], ['a', 'b'], ['a']):
    assert cli.main(['evaluate', *[str(tmp_path / f) for f in folders], '--truth', str(phantom_tif)]) == 0
    results.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
  one, pooled, few = results
  assert pooled['patients'] == 6 and pooled['segmentation'] == one['segmentation']
  low, high = pooled['segmentation']['confidence_95']['dice_per_volume']
  assert low < pooled['segmentation']['dice_per_volume']['mean'] < high
  assert few['patients'] == 3 and few['segmentation']['confidence_95'] is None
  assert '3 patients' in few['segmentation']['confidence_95_note']


def test_evaluate_refuses_a_patient_in_two_outputs_and_masks_in_some_only(phantom_png, tmp_path, capsys):
  """Catches a patient counted twice when two outputs overlap (its volume would be scored twice),
  and detection-only output pooled with masks (its slices would lack a mask file)."""
  records = kaggle3m.scan(phantom_png)[:4]
  _fake_predict_output(records, tmp_path / 'a', lambda r: np.zeros((256, 256), bool))
  _fake_predict_output(records[:2], tmp_path / 'b', lambda r: np.zeros((256, 256), bool))
  assert cli.main(['evaluate', str(tmp_path / 'a'), str(tmp_path / 'b'), '--truth', str(phantom_png)]) == 2
  assert f'both hold patient {records[0].patient}' in capsys.readouterr().err
  other = [r for r in kaggle3m.scan(phantom_png) if r.patient != records[0].patient][:2]
  _fake_predict_output(other, tmp_path / 'c', lambda r: np.zeros((256, 256), bool))
  with open(tmp_path / 'c' / 'predictions.csv') as f:
    rows = [{k: v for k, v in row.items() if k != 'tumor_pixels'} for row in csv.DictReader(f)]
  with open(tmp_path / 'c' / 'predictions.csv', 'w', newline='') as f:
    writer = csv.DictWriter(f, list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  assert cli.main(['evaluate', str(tmp_path / 'a'), str(tmp_path / 'c'), '--truth', str(phantom_png)]) == 2
  assert 'has no masks' in capsys.readouterr().err


def test_detection_scores_the_label_column_predict_wrote(trained_runs, phantom_png, tmp_path, capsys):
  """A segmenter-only prediction with a mask rule at threshold 0.3 that removes tumors under 1500
  pixels (the phantom's are 800-2300) labels a slice by its post-processed mask, not by
  probability >= 0.5. Catches `evaluate` re-deciding the labels by thresholding `probability` at 0.5
  (its detection accuracy then differs from that of the `label` column predict wrote) and a ROC AUC
  not computed from `probability`."""
  from tests.localize.helpers import with_mask_rule
  from jaxbrain.metrics import roc_auc

  seg = with_mask_rule(trained_runs[1], tmp_path / 'seg', threshold=0.3, min_pixels=1500)
  assert cli.main(['predict', str(phantom_png), '--seg-run', str(seg), '--out', str(tmp_path / 'pred'),
                   '--no-progress']) == 0
  with open(tmp_path / 'pred' / 'predictions.csv', newline='') as f:
    rows = list(csv.DictReader(f))
  truth = {r.image_path.stem: int(kaggle3m.read_mask(r.mask_path).any()) for r in kaggle3m.scan(phantom_png)}
  true = np.array([truth[Path(r['path']).stem] for r in rows])
  labels = np.array([int(r['label']) for r in rows])
  probabilities = np.array([float(r['probability']) for r in rows])
  assert ((probabilities >= 0.5) != labels).any(), 'the rule must decide differently from p >= 0.5 somewhere'
  capsys.readouterr()
  assert cli.main(['evaluate', str(tmp_path / 'pred'), '--truth', str(phantom_png)]) == 0
  detection = json.loads(capsys.readouterr().out.strip().splitlines()[-1])['detection']
  assert detection['accuracy'] == pytest.approx(np.mean(labels == true))
  assert detection['sensitivity'] == pytest.approx(labels[true == 1].mean())
  assert detection['roc_auc'] == pytest.approx(roc_auc(true, probabilities))
