"""`python -m experiments.radiogenomics` on phantom patients with subtype codes drawn at random."""
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from jaxbrain import cli, tumour_type
from jaxbrain.data.clinical import COLUMNS, GENOMIC_CLUSTERS, PATIENT, read_clinical
from jaxbrain.data.kaggle3m import read_image, read_mask
from jaxbrain.data.phantom import write_phantom
from jaxbrain.errors import UserError
from jaxbrain.intensity import intensity_features
from jaxbrain.radiogenomics import patient_images, patient_masks
from jaxbrain.shape import FEATURES, shape_features

from experiments import radiogenomics


FAST = ['--repeats', '1', '--permutations', '5']
CODED = (*GENOMIC_CLUSTERS, 'histological_type', 'neoplasm_histologic_grade')


def _with_random_subtypes(phantom, folder):
  """A copy of the phantom whose data.csv gives each patient cluster codes 1-2 drawn at random."""
  data = shutil.copytree(phantom, folder)
  with open(data / 'data.csv', newline='') as f:
    patients = [row[PATIENT] for row in csv.DictReader(f)]
  rng = np.random.default_rng(0)
  with open(data / 'data.csv', 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow([PATIENT, *COLUMNS])
    for patient in patients:
      writer.writerow([patient] + [int(rng.integers(1, 3)) if c in CODED else '' for c in COLUMNS])
  return data, patients


def test_the_experiment_writes_its_table_features_plots_and_page(phantom_tif, tmp_path, capsys):
  """Every feature against every cluster column once, each patient's features once, the plots and
  the page; the subtypes were drawn independently of the images, so nothing passes Bonferroni.
  Catches a hypothesis left out or counted twice (a wrong threshold), a patient missing."""
  data, patients = _with_random_subtypes(phantom_tif, tmp_path / 'kaggle_3m')
  out = tmp_path / 'out'
  assert radiogenomics.main(['--data-dir', str(data), '--out', str(out), *FAST]) == 0
  tests = json.loads((out / 'associations.json').read_text())
  assert {(t['feature'], t['subtype']) for t in tests['tests']} == {(f, s) for f in FEATURES for s in GENOMIC_CLUSTERS}
  assert tests['threshold'] == 0.05 / (len(FEATURES) * len(GENOMIC_CLUSTERS))
  assert not any(t['significant'] for t in tests['tests'])
  with open(out / 'features.csv', newline='') as f:
    assert sorted(row['patient'] for row in csv.DictReader(f)) == sorted(patients)
  assert (out / 'features_by_subtype_true.png').stat().st_size > 0
  page = (out / 'report.html').read_text()
  assert 'Buda et al. 2019' in page and 'Research use only' in page
  assert 'Bonferroni threshold' in capsys.readouterr().out
  predicted = json.loads((out / 'prediction.json').read_text())['targets']
  # codes 1-2 only: the targets of codes 3 and 4 have no positive patient, so no model
  coded = [t.name for t in tumour_type.TARGETS if t.positive <= 2]
  assert [(t['masks'], t['target']) for t in predicted] == [
      ('true' if name == 'shape' else f'{name} (true masks)', target)
      for name in tumour_type.FEATURE_SETS for target in coded]
  with open(out / 'features.csv', newline='') as f:
    assert all(row['flair_median'] for row in csv.DictReader(f) if int(row['voxels']))


@pytest.mark.parametrize('feature_set', ['shape', 'shape and intensity'])
def test_a_saved_type_model_applied_to_other_folders_gives_its_probabilities(phantom_tif, tmp_path, feature_set):
  """--apply-to a folder with masks: type_probabilities.csv holds, per patient, what the saved
  model gives from the shapes (and intensities) of those masks, and says they are the true masks.
  Catches a model refitted on the new folder, probabilities written for the wrong patient, or
  intensity features read from other slices than the masks'."""
  data, _ = _with_random_subtypes(phantom_tif, tmp_path / 'kaggle_3m')
  out = tmp_path / 'out'
  assert radiogenomics.main(['--data-dir', str(data), '--out', str(out), *FAST]) == 0
  saved = out / tumour_type.model_file(feature_set)
  assert radiogenomics.main(['--apply-to', str(phantom_tif), '--out', str(out), '--type-model', str(saved)]) == 0
  model = tumour_type.load(saved)
  volumes = patient_masks(phantom_tif)
  shapes = {p: shape_features(v) for p, v in volumes.items()}
  intensities = {p: intensity_features(images, volumes[p]) for p, images in patient_images(phantom_tif).items()}
  expected = tumour_type.apply(model, shapes, intensities)
  with open(out / 'type_probabilities.csv', newline='') as f:
    rows = list(csv.DictReader(f))
  assert {r['patient'] for r in rows} == set(expected) and all('true masks' in r['masks'] for r in rows)
  for row in rows:
    for name, p in expected[row['patient']].items():
      assert float(row[name]) == pytest.approx(p, rel=1e-9)


@pytest.mark.slow
def test_apply_to_folders_without_masks_uses_the_segmenter_and_matches_predict(trained_runs, phantom_tif, tmp_path):
  """Folders holding only images: the masks come from --seg-run through `jaxbrain predict`, the CSV
  names that segmenter, and its probabilities are those `predict --type-model` puts in summary.json,
  which are the saved model's on the shape and intensity of predict's own mask files. Catches a type
  model applied to no masks, to masks other than predict's, or to other slices' intensities."""
  data, _ = _with_random_subtypes(phantom_tif, tmp_path / 'kaggle_3m')
  out = tmp_path / 'out'
  assert radiogenomics.main(['--data-dir', str(data), '--out', str(out), *FAST]) == 0
  images = tmp_path / 'images'
  for folder in sorted(p for p in phantom_tif.iterdir() if p.is_dir())[:2]:
    (images / folder.name).mkdir(parents=True)
    for image in folder.glob('*.tif'):
      if not image.stem.endswith('_mask'):
        shutil.copy(image, images / folder.name / image.name)
  seg = trained_runs[1]
  assert radiogenomics.main(['--apply-to', str(images), '--seg-run', str(seg), '--out', str(out)]) == 0
  with open(out / 'type_probabilities.csv', newline='') as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 2 and all(str(seg) in r['masks'] for r in rows)
  assert cli.main(['predict', str(images), '--seg-run', str(seg), '--type-model', str(out / 'type_model.json'),
                   '--out', str(tmp_path / 'pred'), '--no-progress']) == 0
  summary = json.loads((tmp_path / 'pred' / 'summary.json').read_text())
  assert ('from its shape and intensity (research use only): p(cluster-of-clusters 2 vs rest)'
          in (tmp_path / 'pred' / 'report.html').read_text())
  targets = tumour_type.load(out / 'type_model.json')['targets']
  for row in rows:
    for name in targets:
      assert float(row[name]) == pytest.approx(summary[row['patient']]['type_probabilities'][name])
  # the same probabilities recomputed from predict's own mask files and the input slices
  with open(tmp_path / 'pred' / 'predictions.csv', newline='') as f:
    predicted = sorted(csv.DictReader(f), key=lambda r: (r['patient'], int(r['slice'])))
  slices = {}
  for r in predicted:
    mask = read_mask(tmp_path / 'pred' / 'masks' / f'{Path(r["path"]).stem}_mask.png')
    slices.setdefault(r['patient'], []).append((read_image(r['path']), mask))
  expected = tumour_type.apply(tumour_type.load(out / 'type_model.json'), {p: shape_features(np.stack([m for _, m in s]))
                                                         for p, s in slices.items()},
                               {p: intensity_features(np.stack([i for i, _ in s]), np.stack([m for _, m in s]))
                                for p, s in slices.items()})
  for patient, probabilities in expected.items():
    for name, p in probabilities.items():
      assert summary[patient]['type_probabilities'][name] == pytest.approx(p, rel=1e-9)


@pytest.mark.slow
def test_the_image_model_pools_its_five_folds_test_patients(tmp_path):
  """Five tiny fold runs of the image model on ten phantom patients, seven of them coded
  cluster-of-clusters 2 (so that every fold's sides hold one, as a split needs): every patient
  gets one out-of-fold probability, the mean of its test slices' in the fold that tested it; a type
  run is refused by predict's loader; a fold whose split puts its test patient among its training
  patients is refused. Catches a patient scored by a model that trained on it."""
  from jaxbrain.runs import RunError, load_run
  data = write_phantom(tmp_path / 'kaggle_3m', n_patients=10, slices_per_patient=(8, 10), seed=4, image_format='png')
  patients = sorted(d.name.rsplit('_', 1)[0] for d in data.iterdir() if d.is_dir())
  with open(data / 'data.csv', 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow([PATIENT, *COLUMNS])
    for i, patient in enumerate(patients):
      writer.writerow([patient] + [(1 if i < 3 else 2) if c == 'COCCluster' else '' for c in COLUMNS])
  clinical = read_clinical(data)
  tiny = dict(image_size=32, epochs=1, batch_size=4, bootstrap_samples=0)
  figures = radiogenomics.image_model(str(data), 'coc2', str(tmp_path / 'runs'), clinical, **tiny)
  assert sorted(figures['patient_ids']) == sorted(patients) and len(figures['out_of_fold']) == len(patients)
  fold0 = next((tmp_path / 'runs' / 'type01-coc2').glob('*fold0*'))
  with open(fold0 / 'test_predictions.csv', newline='') as f:
    rows = list(csv.DictReader(f))
  patient = rows[0]['patient']
  expected = np.mean([float(r['probability']) for r in rows if r['patient'] == patient])
  assert figures['out_of_fold'][figures['patient_ids'].index(patient)] == pytest.approx(expected)
  with pytest.raises(RunError, match='tumour-type model'):
    load_run(fold0, 'classify')
  split = json.loads((fold0 / 'split.json').read_text())
  split['train'].append(patient)
  (fold0 / 'split.json').write_text(json.dumps(split))
  with pytest.raises(UserError, match=f'tests {patient}, which another fold tested or this one trained on'):
    radiogenomics.image_model(str(data), 'coc2', str(tmp_path / 'runs'), clinical, **tiny)


def test_the_agreement_table_says_na_where_a_feature_has_too_few_patients():
  """Catches a crash at the end of a long run when one feature has no pairs."""
  table = radiogenomics.agreement_table([{'feature': 'margin_fluctuation', 'patients': 1},
                                         {'feature': 'pieces', 'patients': 3, 'median_true': 1.0,
                                          'median_automatic': 2.0, 'correlation': 0.5, 'same_side_of_median': 1.0}])
  assert '| margin_fluctuation | 1 | n/a | n/a | n/a | n/a |' in table
  assert '| pieces | 3 | 1.000 | 2.000 | 0.50 | 1.00 |' in table
