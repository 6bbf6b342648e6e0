"""Ensembles (`jaxbrain ensemble`): the mean of the members' probabilities and their spread, decisions
made on the decision set only, members that cannot go together refused, and the commands that take
a run taking an ensemble."""
import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from jaxbrain import cli
from jaxbrain.data import kaggle3m
from jaxbrain.inference import Scorer
from jaxbrain.localize.ensemble import make_ensemble
from jaxbrain.localize.gate import patients_slices
from jaxbrain.postprocess import apply_rule
from jaxbrain.runs import RunError, load_run, read_split


@pytest.fixture(scope='module')
def ensembles(member_runs, phantom_runs_data, tmp_path_factory):
  out = tmp_path_factory.mktemp('ensembles')
  for name, runs in member_runs.items():
    make_ensemble(runs, out / name, phantom_runs_data, batch_size=8)
  return out / 'cls', out / 'seg'


def _slices(data_dir, runs):
  return patients_slices(data_dir, read_split(runs[0])['test'], 'decision set')


def test_a_classifier_ensemble_is_the_mean_of_its_members_with_their_spread(member_runs, ensembles, phantom_runs_data):
  """Catches an ensemble that scores with one member, averages logits instead of probabilities, or
  reports a spread other than the members' standard deviation (|a - b| / 2 for two members)."""
  images, _, patients = _slices(phantom_runs_data, member_runs['cls'])
  a, b = (Scorer(run, None).score(images, patients).probability for run in member_runs['cls'])
  together = Scorer(ensembles[0], None).score(images, patients)
  assert not np.array_equal(a, b)
  np.testing.assert_array_equal(together.probability, (a + b) / 2)
  np.testing.assert_allclose(together.spread, np.abs(a - b) / 2, rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(together.label_disputed, (a >= 0.5) != (b >= 0.5))


def test_a_segmenter_ensemble_averages_pixel_probabilities_before_its_rule(member_runs, ensembles, phantom_runs_data):
  """Catches masks averaged after post-processing (or a member's own rule used), and a mask
  disagreement other than the share of the members' union where they differ."""
  images, _, patients = _slices(phantom_runs_data, member_runs['seg'])
  ensemble = load_run(ensembles[1], 'segment')
  flip = ensemble.mask_rule.flip_average
  a, b = (Scorer(None, run).pixel_probability(images, patients, flip) for run in member_runs['seg'])
  together = Scorer(None, ensembles[1]).score(images, patients)
  np.testing.assert_array_equal(together.mask, apply_rule(ensemble.mask_rule, (a + b) / 2, patients))
  masks = [apply_rule(ensemble.mask_rule, p, patients) for p in (a, b)]
  union = (masks[0] | masks[1]).sum(axis=(1, 2))
  expected = np.where(union > 0, (masks[0] ^ masks[1]).sum(axis=(1, 2)) / np.maximum(union, 1), 0)
  np.testing.assert_allclose(together.mask_disagreement, expected)


def test_the_decisions_read_no_test_patient(member_runs, ensembles, phantom_runs_data, tmp_path, monkeypatch):
  """Catches decisions that depend on the seed's test patients: made again from a copy of the data
  without their files, the ensemble's decisions and decision-set figures are the same. And a data
  folder without the decision set is refused, naming a missing patient. (The command refuses data
  other than the members', `runs.check_data`; the check is lifted here, where the data differs on
  purpose.)"""
  monkeypatch.setattr('jaxbrain.localize.ensemble.check_data', lambda *_: None)
  split = json.loads((ensembles[1] / 'split.json').read_text())
  assert split['test'] and not set(split['test']) & set(split['validation'])
  pruned = shutil.copytree(phantom_runs_data, tmp_path / 'kaggle_3m')
  for patient in split['test']:
    for folder in pruned.glob(f'{patient}_*'):
      shutil.rmtree(folder)
  make_ensemble(member_runs['seg'], tmp_path / 'again', pruned, batch_size=8)
  for name in ('decision.json', 'decision_set.json', 'mask_rules.csv'):
    assert (tmp_path / 'again' / name).read_text() == (ensembles[1] / name).read_text()
  for patient in split['validation']:
    for folder in pruned.glob(f'{patient}_*'):
      shutil.rmtree(folder)
  with pytest.raises(RunError, match='decision set patients'):
    make_ensemble(member_runs['seg'], tmp_path / 'never', pruned, batch_size=8)
  assert not (tmp_path / 'never').exists()


def test_members_that_cannot_go_together_are_refused(member_runs, trained_runs, phantom_runs_data, tmp_path):
  """Catches an ensemble of a run that is no member, of members of another split or another task,
  of one member twice, or of members whose inputs differ (each refusal names the run)."""
  cls = member_runs['cls']
  other_size = shutil.copytree(cls[1], tmp_path / 'size')
  config = json.loads((other_size / 'config.json').read_text())
  config['config']['data']['image_size'] = 64
  (other_size / 'config.json').write_text(json.dumps(config))
  other_seed = shutil.copytree(cls[1], tmp_path / 'seed')
  split = json.loads((other_seed / 'split.json').read_text())
  (other_seed / 'split.json').write_text(json.dumps({**split, 'seed': 1}))
  cases = {'is not an ensemble member': [cls[0], trained_runs[0]], 'differs': [cls[0], other_seed],
           'is a segment run': [cls[0], member_runs['seg'][1]], 'as .* is already': [cls[0], cls[0]],
           'image size 64': [cls[0], other_size]}
  for message, runs in cases.items():
    with pytest.raises(RunError, match=message) as error:
      make_ensemble(runs, tmp_path / 'out', phantom_runs_data)
    assert str(runs[1]) in str(error.value) or message == 'is a segment run'
    assert not (tmp_path / 'out').exists()


def test_predict_gate_and_evaluate_take_ensembles(ensembles, phantom_runs_data, tmp_path, capsys):
  """Catches a command that refuses an ensemble folder or drops the members' disagreement: predict
  writes the uncertainty columns and the per-patient disagreement, gate chooses for a pair of
  ensembles, evaluate scores the prediction; the folder still works after it is moved."""
  moved = [shutil.copytree(folder, tmp_path / 'moved' / folder.name) for folder in ensembles]
  patient = next(d for d in sorted(phantom_runs_data.iterdir()) if d.is_dir())
  out = tmp_path / 'pred'
  assert cli.main(['predict', str(patient), '--run', str(moved[0]), '--seg-run', str(moved[1]), '--out', str(out),
                   '--no-progress']) == 0
  with open(out / 'predictions.csv') as f:
    rows = list(csv.DictReader(f))
  assert {'disagreement', 'mask_disagreement', 'members_disagree'} <= set(rows[0])
  assert all(0 <= float(r['disagreement']) <= 0.5 and r['members_disagree'] in ('0', '1') for r in rows)
  entry = json.loads((out / 'summary.json').read_text())[rows[0]['patient']]
  assert entry['max_disagreement'] == max(float(r['disagreement']) for r in rows)
  assert "members disagree on the label" in (out / 'report.html').read_text()
  assert cli.main(['gate', '--run', str(moved[0]), '--seg-run', str(moved[1]), '--data-dir', str(phantom_runs_data),
                   '--bootstrap-samples', '0']) == 0
  assert list((moved[1] / 'gates').glob('*ensemble.json'))
  assert cli.main(['evaluate', str(out), '--truth', str(phantom_runs_data), '--bootstrap-samples', '0']) == 0


def test_the_spark_jobs_scorer_takes_an_ensemble(ensembles, phantom_runs_data):
  """Catches the Spark job's per-patient scoring refusing an ensemble folder, scoring it other than
  `predict` does (the ensemble's mean probability), or dropping the members' disagreement."""
  import pandas as pd

  from jaxbrain.spark import score_patient
  patient = next(d for d in sorted(phantom_runs_data.iterdir()) if d.is_dir())
  files = sorted(p for p in patient.glob('*.png') if not p.stem.endswith('_mask'))
  frame = pd.DataFrame({'path': [f'file:{p}' for p in files], 'content': [p.read_bytes() for p in files]})
  rows = score_patient(frame, str(ensembles[0]), None, 8).sort_values('slice')
  order = np.argsort([kaggle3m.slice_identity(p)[1] for p in files])
  images = np.stack([kaggle3m.read_image(p) for p in files])[order]
  expected = Scorer(ensembles[0], None).score(images, [patient.name.rsplit('_', 1)[0]] * len(files))
  np.testing.assert_allclose(rows['probability'].to_numpy(), expected.probability, rtol=1e-5)
  np.testing.assert_allclose(rows['disagreement'].to_numpy(), expected.spread, rtol=1e-5, atol=1e-7)


def test_predict_answers_with_the_detector_chosen_for_the_pair(ensembles, phantom_runs_data, tmp_path):
  """Catches a stored detector ignored by predict (the classifier's probability given instead of
  the combination, or labels at the classifier's threshold instead of the detector's own), and
  each model's own probability missing beside it."""
  classifier, segmenter = (shutil.copytree(folder, tmp_path / folder.name) for folder in ensembles)
  assert cli.main(['gate', '--run', str(classifier), '--seg-run', str(segmenter), '--data-dir', str(phantom_runs_data),
                   '--bootstrap-samples', '0']) == 0
  gate_file, = (segmenter / 'gates').glob('*.json')
  stored = json.loads(gate_file.read_text())
  assert stored['detector_validation'] and stored['test']['detection']['chosen']
  gate_file.write_text(json.dumps({**stored, 'detector': {'combination': 'mean', 'smoothing': 0, 'threshold': 0.3}}))
  patient = next(d for d in sorted(phantom_runs_data.iterdir()) if d.is_dir())
  assert cli.main(['predict', str(patient), '--run', str(classifier), '--seg-run', str(segmenter),
                   '--out', str(tmp_path / 'pred'), '--no-progress']) == 0
  with open(tmp_path / 'pred' / 'predictions.csv') as f:
    rows = list(csv.DictReader(f))
  for row in rows:
    mean = (float(row['classifier_probability']) + float(row['segmenter_probability'])) / 2
    assert float(row['probability']) == pytest.approx(mean, abs=1e-6)
    assert row['label'] == str(int(mean >= 0.3))
  assert 'the mean of the classifier' in (tmp_path / 'pred' / 'report.html').read_text()
  assert any(0.3 <= float(row['probability']) < 0.5 for row in rows)  # where 0.5 would label otherwise


def test_a_nifti_case_gets_probability_and_disagreement_volumes(member_runs, ensembles, tmp_path):
  """Catches NIfTI outputs of an ensemble without its probability or disagreement volume, volumes
  off the input's grid, and a probability volume other than the mean of the members' own."""
  import nibabel as nib

  from jaxbrain.data.phantom import write_nifti_phantom
  files, _ = write_nifti_phantom(tmp_path / 'case', n_slices=6, in_plane=64, axcodes='PSR')
  given = ['--t1', str(files['t1']), '--flair', str(files['flair']), '--t1ce', str(files['t1ce']), '--case', 'c']
  volumes = {}
  for name, run in (('ensemble', ensembles[1]), *((f'member{k}', run) for k, run in enumerate(member_runs['seg']))):
    out = tmp_path / name
    assert cli.main(['predict', *given, '--seg-run', str(run), '--out', str(out), '--no-progress']) == 0
    volumes[name] = {kind: nib.load(str(out / f'c_{kind}.nii.gz')) for kind in ('probability', 'disagreement')
                     if (out / f'c_{kind}.nii.gz').exists()}
  reference = nib.load(str(files['flair']))
  for image in volumes['ensemble'].values():
    assert image.shape == reference.shape and np.allclose(image.affine, reference.affine)
  assert set(volumes['member0']) == {'probability'}  # one model: no disagreement to show
  mean = (volumes['member0']['probability'].get_fdata() + volumes['member1']['probability'].get_fdata()) / 2
  np.testing.assert_allclose(volumes['ensemble']['probability'].get_fdata(), mean, atol=1e-5)
  spread = volumes['ensemble']['disagreement'].get_fdata()
  assert spread.min() >= 0 and spread.max() <= 0.5 + 1e-6


def test_other_data_under_the_same_patient_names_is_refused(member_runs, trained_runs, phantom_runs_data, tmp_path,
                                                           capsys):
  """Catches `jaxbrain ensemble` or `jaxbrain gate` choosing decisions on images other than the ones
  the runs were trained on (one decision-set slice changed, every patient name the same), instead
  of refusing in one line naming both folders; an identical copy of the data is accepted."""
  split = json.loads((member_runs['seg'][0] / 'split.json').read_text())
  other = shutil.copytree(phantom_runs_data, tmp_path / 'other' / 'kaggle_3m')
  image = next(p for p in sorted(other.glob(f'{split["test"][0]}_*/*.png')) if not p.stem.endswith('_mask'))
  Image.fromarray(255 - np.asarray(Image.open(image))).save(image)
  classifier, segmenter = trained_runs
  for command in (['ensemble', *map(str, member_runs['seg']), '--out', str(tmp_path / 'e')],
                  ['gate', '--run', str(classifier), '--seg-run', str(segmenter)]):
    assert cli.main([*command, '--data-dir', str(other)]) == 2
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and f'{other}: is not the data' in said[0] and str(phantom_runs_data) in said[0]
  assert not (tmp_path / 'e').exists()
  copy = shutil.copytree(phantom_runs_data, tmp_path / 'copy' / 'kaggle_3m')
  make_ensemble(member_runs['seg'], tmp_path / 'from_a_copy', copy, batch_size=8)
