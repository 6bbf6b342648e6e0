"""`jaxbrain predict` end to end on phantom data with tiny trained runs."""
import csv
import html
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from jaxbrain import cli
from jaxbrain.data import kaggle3m
from jaxbrain.data.phantom import write_nifti_phantom
from jaxbrain.localize.predict import predict
from jaxbrain.runs import RunError, load_run
from jaxbrain.shape import shape_features
from tests.localize.helpers import LONE_TUMOR_CASE, lone_tumor_patient, with_mask_rule

def test_predict_writes_every_output(trained_runs, phantom_png, tmp_path):
  """Catches a missing or inconsistent output (rows, summary, masks, overlays), a pair without a
  chosen detector answering with anything but the classifier (each model's own probability beside
  it), and a page that does not say the probability is the geometric mean of the classifier's two
  heads when it is."""
  classifier, segmenter = trained_runs
  out = tmp_path / 'out'
  assert cli.main(['predict', str(phantom_png), '--run', str(classifier), '--seg-run', str(segmenter), '--out', str(out),
                   '--no-progress']) == 0
  records = kaggle3m.scan(phantom_png)
  with open(out / 'predictions.csv') as f:
    rows = list(csv.DictReader(f))
  # masks are not inputs; slices in numeric order within each patient
  assert [r['path'] for r in rows] == [str(r.image_path) for r in records]
  assert list(rows[0]) == ['path', 'patient', 'slice', 'probability', 'label', 'classifier_probability',
                           'segmenter_probability', 'tumor_pixels']
  assert all(r['probability'] == r['classifier_probability'] for r in rows)  # no detector chosen: the classifier's
  assert all(0 <= float(r['probability']) <= 1 and r['label'] in ('0', '1') for r in rows)
  summary = json.loads((out / 'summary.json').read_text())
  assert set(summary) == {r.patient for r in records}
  for patient, entry in summary.items():
    mine = [r for r in rows if r['patient'] == patient]
    assert entry['slices'] == len(mine)
    assert sorted(entry['slices_with_tumor']) == sorted(int(r['slice']) for r in mine if r['label'] == '1')
    assert entry['volume_voxels'] == sum(int(r['tumor_pixels']) for r in mine)
    assert entry['tumor_area_pixels'] == {r['slice']: int(r['tumor_pixels']) for r in mine}
    # shape features from the patient's masks in slice order (catches another patient's, or a shuffled stack)
    stack = np.stack([kaggle3m.read_mask(out / 'masks' / f'{Path(r["path"]).stem}_mask.png') for r in mine])
    assert entry['shape'] == {**shape_features(stack).as_dict(), 'volume_ml': None}
  stem = records[0].image_path.stem
  mask = kaggle3m.read_mask(out / 'masks' / f'{stem}_mask.png')
  assert mask.sum() == int(rows[0]['tumor_pixels'])
  assert (out / 'overlays' / f'{stem}_overlay.png').is_file()
  assert 'geometric mean of its classifier and mask heads' in (out / 'report.html').read_text()


def read_rows(path):
  with open(path) as f:
    return list(csv.DictReader(f))


def test_predict_reproduces_the_runs_own_test_predictions(trained_runs, phantom_runs_data, tmp_path):
  """Catches a `predict` that scores with other weights than the run measured (e.g. the newest
  checkpoint where validation selected an earlier one, or the trained weights where the run
  evaluated their moving average), another threshold, preprocessing or compute dtype, without the
  run's test-time flip averaging or its score with the mask head, or counts tumor pixels at another resolution than the run's own
  test evaluation; and a segmenter whose masks `predict` loses (tumor slices must come back with
  tumor pixels); with the segmenter alone, a probability that is not the segmentation run's own
  slice probability."""
  classifier, segmenter = trained_runs
  test_patients = json.loads((classifier / 'split.json').read_text())['test']
  assert json.loads((segmenter / 'split.json').read_text())['test'] == test_patients
  folders = sorted(d for d in phantom_runs_data.iterdir() if d.is_dir() and d.name.rsplit('_', 1)[0] in test_patients)
  predict(folders, classifier, tmp_path / 'out', seg_run_dir=segmenter, progress=False)
  predicted = {r['path']: r for r in read_rows(tmp_path / 'out' / 'predictions.csv')}
  own_classifier = read_rows(classifier / 'test_predictions.csv')
  own_segmenter = read_rows(segmenter / 'test_predictions.csv')
  assert len(predicted) == len(own_classifier) == len(own_segmenter) > 0
  for mine, theirs in zip(own_classifier, own_segmenter):
    row = predicted[str(phantom_runs_data / mine['path'])]
    assert float(row['probability']) == pytest.approx(float(mine['probability']), abs=1e-5)
    assert row['label'] == mine['label']
    # without a gate chosen for the pair, the classifier's label gates the mask
    assert row['tumor_pixels'] == (theirs['tumor_pixels'] if row['label'] == '1' else '0')
  tumor = [int(r['tumor_pixels']) for r in own_segmenter if r['truth'] == '1']
  empty = [int(r['tumor_pixels']) for r in own_segmenter if r['truth'] == '0']
  assert np.mean(np.array(tumor) > 0) >= 0.8 and np.mean(np.array(empty) > 0) <= 0.2
  # the segmenter alone: its own slice probability and label, as its run measured them
  predict(folders, None, tmp_path / 'seg_only', seg_run_dir=segmenter, progress=False)
  alone = {r['path']: r for r in read_rows(tmp_path / 'seg_only' / 'predictions.csv')}
  for theirs in own_segmenter:
    row = alone[str(phantom_runs_data / theirs['path'])]
    assert float(row['probability']) == pytest.approx(float(theirs['probability']), abs=1e-5)
    assert row['label'] == theirs['label'] == str(int(int(row['tumor_pixels']) > 0))


def test_predict_applies_the_segmenters_stored_mask_rule(trained_runs, phantom_png, tmp_path):
  """Catches: predict ignoring the rule the run stored (a size filter that removes everything must
  empty every mask and label; single-slice removal must remove a tumor seen on a patient's last
  slice only, and nothing of the tumors that span slices), and flip averaging that is not applied
  (the probabilities must change)."""
  _, segmenter = trained_runs
  lone = lone_tumor_patient(phantom_png, tmp_path / 'lone')
  runs = {'plain': with_mask_rule(segmenter, tmp_path / 'plain'),
          'huge': with_mask_rule(segmenter, tmp_path / 'huge', min_pixels=10**6),
          'lonely': with_mask_rule(segmenter, tmp_path / 'lonely', drop_single_slice=True),
          'flip': with_mask_rule(segmenter, tmp_path / 'flip', flip_average=True)}
  rows = {}
  for name, run in runs.items():
    predict([phantom_png, lone], None, tmp_path / f'out_{name}', seg_run_dir=run, progress=False)
    rows[name] = read_rows(tmp_path / f'out_{name}' / 'predictions.csv')
  assert any(int(r['tumor_pixels']) for r in rows['plain'])
  assert all(r['tumor_pixels'] == '0' and r['label'] == '0' for r in rows['huge'])
  is_lone = np.array([r['patient'] == LONE_TUMOR_CASE.rsplit('_', 1)[0] for r in rows['plain']])
  plain, lonely = (np.array([int(r['tumor_pixels']) for r in rows[k]]) for k in ('plain', 'lonely'))
  assert plain[is_lone][-1] > 0 and lonely[is_lone][-1] == 0
  assert (lonely[~is_lone] == plain[~is_lone]).all()
  assert [r['probability'] for r in rows['flip']] != [r['probability'] for r in rows['plain']]


def test_classifier_alone_gives_gradcam_overlays(trained_runs, phantom_png, tmp_path):
  classifier, _ = trained_runs
  one = kaggle3m.scan(phantom_png)[3].image_path
  summary = predict([one], classifier, tmp_path / 'out', progress=False)
  assert sum(p['slices'] for p in summary.values()) == 1
  assert (tmp_path / 'out' / 'overlays' / f'{one.stem}_overlay.png').is_file()
  assert not (tmp_path / 'out' / 'masks').exists()
  with open(tmp_path / 'out' / 'predictions.csv') as f:
    assert 'tumor_pixels' not in next(csv.DictReader(f))


def test_errors(trained_runs, phantom_png, tmp_path, capsys):
  """Catches a run of another task loaded, a folder that is no run accepted, an unreadable image
  failing without its name (or after writing outputs), outputs written into the inputs' folder, and
  a missing input named as an output folder that would hold it."""
  classifier, segmenter = trained_runs
  with pytest.raises(RunError, match='is a segment run, but a classification run'):
    load_run(segmenter, 'classify')
  with pytest.raises(RunError, match='not a jaxbrain run directory'):
    load_run(tmp_path, 'classify')
  bad = shutil.copytree(phantom_png, tmp_path / 'bad')
  victim = kaggle3m.scan(bad)[0].image_path
  victim.write_bytes(b'garbage')
  before = sorted(p.name for p in victim.parent.iterdir())
  assert cli.main(['predict', str(bad), '--run', str(classifier), '--out', str(tmp_path / 'o'), '--no-progress']) == 2
  assert f'{victim.name}: not an image file' in capsys.readouterr().err
  assert not (tmp_path / 'o').exists()
  # never writes into the inputs
  assert cli.main(['predict', str(bad), '--run', str(classifier), '--out', str(victim.parent), '--no-progress']) == 2
  assert 'inside or holds the inputs' in capsys.readouterr().err
  assert sorted(p.name for p in victim.parent.iterdir()) == before
  # an input that does not exist is named as such (not as an output folder that would hold it)
  assert cli.main(['predict', str(tmp_path / 'nothing'), '--run', str(classifier), '--out', str(tmp_path / 'o')]) == 2
  assert capsys.readouterr().err.strip().endswith(f'{tmp_path / "nothing"}: no such file or folder')


def test_nifti_case_comes_back_as_a_mask_volume_with_its_tumor(trained_runs, tmp_path, capsys):
  """A synthetic NIfTI case stored in a non-canonical orientation (PSR, 240 px in-plane, float
  scanner units) through `jaxbrain predict`: the mask volume must have the input's shape and affine,
  its tumor must lie on the true tumor's voxels, and `tumor_volume_ml` must match the truth within
  what the tiny phantom segmenter reaches. Catches a mask written in the wrong voxel order or frame
  (the overlap collapses), a volume computed from 256-px pixels or without the voxel size (off by
  the resampling or spacing factor), and a case folder read as slice images."""
  classifier, segmenter = trained_runs
  files, truth = write_nifti_phantom(tmp_path / 'case', n_slices=16, seed=7, axcodes='PSR', spacing=(0.9, 0.9, 2.5))
  out = tmp_path / 'out'
  assert cli.main(['predict', str(tmp_path / 'case'), '--seg-run', str(segmenter), '--out', str(out),
                   '--no-progress']) == 0
  assert 'tumor volume phantom007' in capsys.readouterr().out
  written = nib.load(str(out / 'phantom007_mask.nii.gz'))
  flair = nib.load(str(files['flair']))
  assert written.shape == flair.shape and np.allclose(written.affine, flair.affine)
  predicted = np.asarray(written.dataobj).astype(bool)
  overlap = 2 * (predicted & truth).sum() / (predicted.sum() + truth.sum())
  with capsys.disabled():  # the figures docs/predict.md quotes, shown with -s
    print(f'NIfTI phantom: Dice {overlap:.2f}, {predicted.sum() * 0.9 * 0.9 * 2.5 / 1000:.2f} ml predicted for '
          f'{truth.sum() * 0.9 * 0.9 * 2.5 / 1000:.2f} ml')
  assert overlap > 0.6
  entry = json.loads((out / 'summary.json').read_text())['phantom007']
  with open(out / 'predictions.csv') as f:
    rows = list(csv.DictReader(f))
  # the mask volume holds the slices' predicted area, resampled from 256 to 240 px in-plane
  assert predicted.sum() == pytest.approx(sum(int(r['tumor_pixels']) for r in rows) * (240 / 256) ** 2, rel=0.05)
  assert entry['tumor_volume_ml'] == pytest.approx(predicted.sum() * 0.9 * 0.9 * 2.5 / 1000)
  # against the truth, within the tiny segmenter's own error (it over-segments the phantom: run with -s)
  assert 0.5 < entry['tumor_volume_ml'] / (truth.sum() * 0.9 * 0.9 * 2.5 / 1000) < 2
  assert entry['shape']['volume_ml'] == entry['tumor_volume_ml'] and entry['shape']['tumour_slices'] > 0
  assert entry['shape']['voxels'] == sum(int(r['tumor_pixels']) for r in rows)
  assert [int(r['slice']) for r in rows] == list(range(1, 17)) and {r['path'] for r in rows} == {str(files['flair'])}
  # the same case by its files, named explicitly
  assert cli.main(['predict', '--t1', str(files['t1']), '--flair', str(files['flair']), '--t1ce', str(files['t1ce']),
                   '--case', 'given', '--run', str(classifier), '--out', str(tmp_path / 'out2'), '--no-progress']) == 0
  assert json.loads((tmp_path / 'out2' / 'summary.json').read_text())['given']['slices'] == 16
  assert cli.main(['predict', '--t1', str(files['t1']), '--run', str(classifier), '--out', str(tmp_path / 'o3')]) == 2
  assert 'missing --flair, --t1ce' in capsys.readouterr().err


def test_a_2p5d_segmenter_warns_when_a_patients_slices_have_gaps(trained_runs, phantom_runs_data, tmp_path):
  """The test suite's segmenter takes each slice with its neighbours. Catches a patient given with a
  slice missing scored without a word (the slices beside the gap would see other neighbours than in
  training), a warning raised for whole folders, and a prediction page that does not repeat the
  warnings the console printed (the gap, the run trained on phantom data only)."""
  _, segmenter = trained_runs
  folder = next(d for d in sorted(phantom_runs_data.iterdir()) if d.is_dir())
  whole, gapped = tmp_path / 'whole' / folder.name, tmp_path / 'gapped' / folder.name
  shutil.copytree(folder, whole)
  shutil.copytree(folder, gapped)
  for path in [*gapped.glob(f'{folder.name}_5.*'), *gapped.glob(f'{folder.name}_5_mask.*')]:
    path.unlink()
  with pytest.warns(UserWarning, match=f'{folder.name.rsplit("_", 1)[0]}: slices 5 are not among the inputs'):
    predict([gapped], None, tmp_path / 'out_gapped', seg_run_dir=segmenter, progress=False)
  page = html.unescape((tmp_path / 'out_gapped' / 'report.html').read_text())
  assert 'slices 5 are not among the inputs' in page and 'trained on synthetic phantom data only' in page
  import warnings
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    predict([whole], None, tmp_path / 'out_whole', seg_run_dir=segmenter, progress=False)
  assert not [w for w in caught if 'not among the inputs' in str(w.message)]


def test_a_volume_case_without_a_segmenter_says_once_that_no_mask_is_written(trained_runs, tmp_path):
  """Catches a NIfTI case scored by a classifier alone with no word that no mask volume will come
  (the user waits for `<case>_mask.nii.gz`), and that word repeated per slice or per chunk."""
  import warnings
  classifier, _ = trained_runs
  write_nifti_phantom(tmp_path / 'case', n_slices=6, in_plane=64)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    predict([tmp_path / 'case'], classifier, tmp_path / 'out', progress=False)
  said = [str(w.message) for w in caught if 'no mask' in str(w.message)]
  assert len(said) == 1 and 'phantom000' in said[0] and '--seg-run' in said[0]
  assert not list((tmp_path / 'out').glob('*.nii.gz'))
