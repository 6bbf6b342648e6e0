"""Model bundles (`jaxbrain export`, `bundle.load_bundle`): the ensemble they come from scores the
same through them, every file is checked before use, and `predict` takes one alone or by default."""
import csv
import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file

from jaxbrain import bundle, cli, safetensors_io
from jaxbrain.bundle import BundleError, load_bundle
from jaxbrain.folders import BundleDir, RunDir
from jaxbrain.inference import Scorer
from jaxbrain.localize.ensemble import make_ensemble
from jaxbrain.localize.export import export, model_card, model_record
from jaxbrain.localize.gate import choose_own_detector, patients_slices
from jaxbrain.runs import RunError, load_run, read_split


@pytest.fixture(scope='module')
def exported(member_runs, phantom_runs_data, tmp_path_factory):
  """(the segmenter ensemble of the two phantom members with its own detector chosen, its bundle)."""
  out = tmp_path_factory.mktemp('export')
  ensemble = out / 'seg'
  make_ensemble(member_runs['seg'], ensemble, phantom_runs_data, batch_size=8)
  choose_own_detector(ensemble, phantom_runs_data, batch_size=8, bootstrap_samples=0)
  export(ensemble, out / 'bundle', 'tiny', '0.1')
  return ensemble, out / 'bundle'


def _decision_set(phantom_runs_data, ensemble):
  return patients_slices(phantom_runs_data, read_split(ensemble)['validation'], 'decision set')


def test_a_bundle_scores_as_the_ensemble_it_came_from(exported, phantom_runs_data):
  """Catches weights stored in another dtype, order or member, a member dropped, a rule or
  detector other than the ensemble's (probabilities, labels, masks and the members' spread must be
  equal, not close)."""
  ensemble, folder = exported
  images, _, patients = _decision_set(phantom_runs_data, ensemble)
  ours, theirs = (Scorer(None, path).score(images, patients) for path in (folder, ensemble))
  for field in ('probability', 'label', 'mask', 'spread', 'mask_disagreement', 'segmenter_probability'):
    np.testing.assert_array_equal(getattr(ours, field), getattr(theirs, field))
  loaded, source = load_bundle(folder, 'segment'), load_run(ensemble, 'segment')
  assert len(loaded.members) == len(source.members) == 2
  assert loaded.mask_rule == source.mask_rule and loaded.detector == source.detector is not None


def test_the_bundle_records_what_predict_needs_and_the_files_read_with_safetensors(exported):
  """Catches a model.json missing the decisions, members, split or versions, a card or licence
  not written, SHA256SUMS not covering every file, and weights the `safetensors` package cannot read."""
  ensemble, folder = exported
  record = json.loads((folder / 'model.json').read_text())
  assert record['decisions']['detector'] == json.loads(RunDir(ensemble).own_detector.read_text())['detector']
  assert record['decisions']['decision']['mask_rule'] == json.loads(RunDir(ensemble).decision.read_text())['mask_rule']
  assert record['data']['patients']['test'] == read_split(ensemble)['test']
  assert {'jaxbrain', 'jax', 'flax'} <= set(record['made_with']) and record['architecture']['parameters'] > 0
  assert record['data']['phantom_only'] and 'not a medical device' in (folder / 'MODEL_CARD.md').read_text()
  assert 'CC BY-NC-SA 4.0' in (folder / 'LICENSE').read_text()
  listed = dict(line.split('  ')[::-1] for line in (folder / 'SHA256SUMS').read_text().splitlines())
  assert set(listed) == {p.relative_to(folder).as_posix() for p in folder.rglob('*') if p.is_file()} - {'SHA256SUMS'}
  member = load_run(ensemble, 'segment').members[1]
  theirs = load_file(folder / 'weights' / 'member1.safetensors')
  for name, value in safetensors_io.flatten(member.variables).items():
    np.testing.assert_array_equal(theirs[name], np.asarray(value))


def test_a_recipe_the_runs_did_not_record_is_stated_at_export_and_said_so(exported):
  """Catches a card reading "Recipe: None" for members whose runs recorded no command (runs made
  from Python), and a recipe stated at export passed off as one the runs recorded."""
  ensemble, folder = exported
  record = json.loads((folder / 'model.json').read_text())
  assert record['recipe']['command'] is None and record['recipe']['source'].startswith('not recorded by the runs')
  assert 'Recipe: None' not in (folder / 'MODEL_CARD.md').read_text()
  command = 'python -m experiments.folds seg --members --data-dir DIR'
  stated = {**model_record(load_run(ensemble, 'segment'), 'tiny', '0.1', command), 'weights_dtype': 'float32'}
  assert stated['recipe'] == {'command': command, 'source': 'stated at export (the runs did not record their command)'}
  assert f'Recipe: `{command}`; stated at export' in model_card(stated)


def test_the_card_says_a_detector_of_the_masks_own_labels_in_words(exported):
  """Catches the card printing a masks'-own-labels detector as a probability "averaged over 0
  neighbouring slice(s), tumour at >= None"."""
  record = json.loads((exported[1] / 'model.json').read_text())
  own = {'combination': 'segmenter', 'smoothing': 0, 'threshold': None}
  card = model_card({**record, 'decisions': {**record['decisions'], 'detector': own}})
  line = next(line for line in card.splitlines() if line.startswith('- Is there a tumour'))
  assert 'when its mask is not empty' in line and 'None' not in line.split(' (chosen on')[0]


def test_a_bundle_loads_and_scores_without_orbax_or_torch(exported):
  """Catches a bundle's loading that imports orbax (the reader of a run's checkpoints) or torch: in
  a process where neither can be imported, the bundle still loads and scores."""
  import subprocess
  import sys

  code = ("import sys; sys.modules.update({'orbax': None, 'orbax.checkpoint': None, 'torch': None}); "
          "import numpy as np; from jaxbrain.inference import Scorer; "
          f"scores = Scorer(None, {str(exported[1])!r}).score(np.zeros((2, 256, 256, 3), np.uint8)); "
          "print(scores.label.tolist())")
  done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-1500:]


def test_the_shipped_card_is_what_its_model_json_writes():
  """Catches the card's wording changed in `model_card` without a bundle to show it: the shipped
  bundle's MODEL_CARD.md (added once, never rewritten) must be what an export writes today."""
  shipped = bundle.shipped_bundle()
  if not shipped.model.is_file():
    pytest.skip(f'no shipped bundle in {shipped.path}')
  assert model_card(json.loads(shipped.model.read_text())) == shipped.card.read_text()

def _damage(folder, how):
  """The file the damage `how` must be named by."""
  weights = folder / 'weights' / 'member1.safetensors'
  if how == 'byte in weights':
    raw = bytearray(weights.read_bytes())
    raw[-3] ^= 1
    weights.write_bytes(bytes(raw))
    return weights
  if how == 'byte in model.json':
    (folder / 'model.json').write_text((folder / 'model.json').read_text().replace('"tiny"', '"tinY"'))
    return folder / 'model.json'
  if how == 'missing weights':
    weights.unlink()
    return weights
  if how == 'missing SHA256SUMS':
    (folder / 'SHA256SUMS').unlink()
    return folder / 'SHA256SUMS'
  if how == 'newer format':
    record = json.loads((folder / 'model.json').read_text())
    (folder / 'model.json').write_text(json.dumps({**record, 'format': bundle.FORMAT + 1}))
  if how == 'other architecture':
    tensors, _ = safetensors_io.read(weights)
    tensors = {name: np.zeros((*value.shape[:-1], value.shape[-1] + 1), value.dtype) if value.ndim else value
               for name, value in tensors.items()}
    safetensors_io.write(weights, tensors)
  bundle.write_checksums(BundleDir(folder))  # the checksums agree: the check that must refuse it is another one
  return weights if how == 'other architecture' else folder / 'model.json'


@pytest.mark.parametrize('how', ['byte in weights', 'byte in model.json', 'missing weights', 'missing SHA256SUMS',
                                 'newer format', 'other architecture'])
def test_a_damaged_bundle_is_refused_naming_the_file(exported, phantom_runs_data, tmp_path, capsys, how):
  """Catches a bundle used although one of its bytes changed, a file is missing, its weights are of
  another architecture, or its format is newer than this jaxbrain reads; the refusal names the file
  in one line, from `predict` too."""
  folder = shutil.copytree(exported[1], tmp_path / 'bundle')
  named = _damage(folder, how)
  with pytest.raises(BundleError, match=str(named)):
    load_bundle(folder, 'segment')
  patient = next(d for d in sorted(phantom_runs_data.iterdir()) if d.is_dir())
  assert cli.main(['predict', str(patient), '--model', str(folder), '--out', str(tmp_path / 'pred')]) == 2
  error = capsys.readouterr().err.strip()
  assert str(named) in error and len(error.splitlines()) == 1


def test_predict_uses_the_shipped_bundle_when_no_model_is_named(exported, phantom_runs_data, tmp_path, capsys,
                                                                 monkeypatch):
  """Catches predict without --model, --run or --seg-run doing anything but use the checkout's
  bundle, its first line not naming the model, its version, sha256 and licence, and summary.json
  or the page not recording them; the same answers as the ensemble's own."""
  ensemble, folder = exported
  monkeypatch.setattr(bundle, 'shipped_bundle', lambda: BundleDir(folder))
  patient = next(d for d in sorted(phantom_runs_data.iterdir()) if d.is_dir())
  assert cli.main(['predict', str(patient), '--out', str(tmp_path / 'pred'), '--no-progress']) == 0
  first = capsys.readouterr().out.splitlines()[0]
  identity = bundle.identity(BundleDir(folder))
  assert first.startswith(f'model tiny 0.1 ({folder}, sha256 {identity[:16]}') and 'CC BY-NC-SA 4.0' in first
  assert 'research only' in first
  entry = next(iter(json.loads((tmp_path / 'pred' / 'summary.json').read_text()).values()))
  assert entry['model']['sha256'] == identity and entry['model']['version'] == '0.1'
  assert f'sha256 {identity[:16]}' in (tmp_path / 'pred' / 'report.html').read_text()
  assert cli.main(['predict', str(patient), '--seg-run', str(ensemble), '--out', str(tmp_path / 'run'),
                   '--no-progress']) == 0
  rows = [list(csv.DictReader(open(tmp_path / name / 'predictions.csv'))) for name in ('pred', 'run')]
  assert [{k: r[k] for k in ('probability', 'label', 'tumor_pixels')} for r in rows[0]] == \
         [{k: r[k] for k in ('probability', 'label', 'tumor_pixels')} for r in rows[1]]


def test_predict_without_a_model_on_a_checkout_without_a_bundle_says_how_to_get_one(phantom_runs_data, tmp_path,
                                                                                      capsys, monkeypatch):
  """Catches a traceback, or a message that leaves the user without a next step (export, train,
  --model), where no bundle ships (a pip install)."""
  monkeypatch.setattr(bundle, 'shipped_bundle', lambda: BundleDir(tmp_path / 'none'))
  patient = next(d for d in sorted(phantom_runs_data.iterdir()) if d.is_dir())
  assert cli.main(['predict', str(patient), '--out', str(tmp_path / 'pred')]) == 2
  error = capsys.readouterr().err.strip()
  assert len(error.splitlines()) == 1 and 'jaxbrain export' in error and '--model' in error and '--seg-run' in error


def test_model_takes_a_bundle_and_names_what_else_to_use(exported, phantom_runs_data, tmp_path, capsys):
  """Catches --model with a folder that holds no bundle (a run, an ensemble, a typo) refused as
  "not a jaxbrain run directory", or loaded as a run of whatever task: one line naming the missing
  model.json and where runs go."""
  patient = next(d for d in sorted(phantom_runs_data.iterdir()) if d.is_dir())
  for folder in (exported[0], tmp_path / 'typo'):
    assert cli.main(['predict', str(patient), '--model', str(folder), '--out', str(tmp_path / 'pred')]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and f'{folder / "model.json"}: not found' in error and '--seg-run' in error


def test_a_bundles_decisions_are_not_chosen_again(exported, phantom_runs_data):
  """Catches `jaxbrain gate` writing into a bundle (its checksums would then refuse it)."""
  with pytest.raises(RunError, match='model bundle'):
    choose_own_detector(exported[1], phantom_runs_data, bootstrap_samples=0)


def test_a_segmenters_own_detector_answers_when_it_scores_alone(exported, phantom_runs_data, tmp_path):
  """Catches a segmenter's stored own detector ignored when it scores alone: the probability must be
  its slice probability averaged with one neighbour on either side within each patient, the label
  that against the detector's threshold, and the masks those of its rule as without a detector."""
  from jaxbrain.decisions import smoothed_along_slices

  ensemble = shutil.copytree(exported[0], tmp_path / 'seg')
  stored = json.loads(RunDir(ensemble).own_detector.read_text())
  RunDir(ensemble).own_detector.write_text(json.dumps({**stored, 'detector': {'combination': 'segmenter',
                                                                             'smoothing': 1, 'threshold': 0.3}}))
  images, _, patients = _decision_set(phantom_runs_data, ensemble)
  scores = Scorer(None, ensemble).score(images, patients)
  plain = Scorer(None, ensemble)
  plain.detector = None
  alone = plain.score(images, patients)
  np.testing.assert_array_equal(scores.mask, alone.mask)
  np.testing.assert_array_equal(scores.segmenter_probability, alone.probability)
  expected = smoothed_along_slices(alone.probability, patients, 1)
  assert not np.allclose(expected, alone.probability)
  np.testing.assert_allclose(scores.probability, expected)
  np.testing.assert_array_equal(scores.label, (expected >= 0.3).astype(int))


def test_the_spark_jobs_scorer_takes_a_bundle(exported, phantom_runs_data):
  """Catches the Spark job's per-patient scoring refusing a bundle or scoring it otherwise than
  `Scorer` does (the bundle's detector and masks)."""
  import pandas as pd

  from jaxbrain.data import kaggle3m
  from jaxbrain.spark import score_patient
  _, folder = exported
  patient = next(d for d in sorted(phantom_runs_data.iterdir()) if d.is_dir())
  files = sorted(p for p in patient.glob('*.png') if not p.stem.endswith('_mask'))
  frame = pd.DataFrame({'path': [f'file:{p}' for p in files], 'content': [p.read_bytes() for p in files]})
  rows = score_patient(frame, None, str(folder), 8).sort_values('slice')
  order = np.argsort([kaggle3m.slice_identity(p)[1] for p in files])
  images = np.stack([kaggle3m.read_image(p) for p in files])[order]
  expected = Scorer(None, folder).score(images, [patient.name.rsplit('_', 1)[0]] * len(files))
  np.testing.assert_allclose(rows['probability'].to_numpy(), expected.probability, rtol=1e-6)
  np.testing.assert_array_equal(rows['label'].to_numpy(), expected.label)
  np.testing.assert_array_equal(rows['tumor_pixels'].to_numpy(), expected.mask.sum(axis=(1, 2)))


def test_run_outputs_stay_out_of_git_while_bundles_are_tracked():
  """Catches a .gitignore that lets a run's files (or the compiled-program cache) into commits, or
  one that hides a bundle folder under checkpoints/models/ from git."""
  import subprocess
  from pathlib import Path

  root = Path(__file__).resolve().parents[2]
  paths = ['checkpoints/seg01/run/checkpoints/best/1/state', 'checkpoints/xla-cache/program', 'checkpoints/tfds/x',
           'checkpoints/models/lgg-seg01/model.json', 'checkpoints/models/lgg-seg01/weights/member0.safetensors',
           'checkpoints/README.md']
  done = subprocess.run(['git', 'check-ignore', '--no-index', *paths], cwd=root, capture_output=True, text=True)
  assert done.stdout.split() == paths[:3]


def test_a_nifti_case_is_predicted_with_a_bundle(exported, tmp_path):
  """Catches a bundle that scores slice folders but not volume cases (their mask volume missing or
  off the input's grid)."""
  import nibabel as nib

  from jaxbrain.data.phantom import write_nifti_phantom
  files, _ = write_nifti_phantom(tmp_path / 'case', n_slices=6, in_plane=64, axcodes='PSR')
  out = tmp_path / 'pred'
  assert cli.main(['predict', '--t1', str(files['t1']), '--flair', str(files['flair']), '--t1ce', str(files['t1ce']),
                   '--case', 'c', '--model', str(exported[1]), '--out', str(out), '--no-progress']) == 0
  mask, reference = nib.load(str(out / 'c_mask.nii.gz')), nib.load(str(files['flair']))
  assert mask.shape == reference.shape and np.allclose(mask.affine, reference.affine)
  assert json.loads((out / 'summary.json').read_text())['c']['model']['name'] == 'tiny'


def test_a_dicom_study_is_predicted_with_a_bundle_and_gets_its_seg(exported, tmp_path):
  """Catches a bundle that scores slice folders and NIfTI cases but writes no DICOM SEG for a DICOM
  study (the bundle's name, version and sha256 put whole where DICOM allows 64 characters)."""
  pytest.importorskip('highdicom')
  pytest.importorskip('SimpleITK')
  from jaxbrain.data.phantom import write_nifti_phantom
  from tests.data.dicom_series import nifti_case_as_dicom

  files, _ = write_nifti_phantom(tmp_path / 'nifti', n_slices=6, in_plane=64, seed=7, axcodes='LPS')
  nifti_case_as_dicom(files, tmp_path / 'study')
  out = tmp_path / 'pred'
  assert cli.main(['predict', str(tmp_path / 'study'), '--model', str(exported[1]), '--out', str(out),
                   '--no-progress']) == 0
  entry = json.loads((out / 'summary.json').read_text())['study']
  assert (out / entry['dicom_seg']).is_file() and 'dicom_seg_skipped' not in entry


def test_a_float16_bundle_halves_its_weights_and_reads_back_as_float32(exported, phantom_runs_data, tmp_path):
  """Catches --float16 storing float32 (no saving), BatchNorm running variances cast to float16
  (these members' reach 270,000: inf), float16 weights computed in float16 at load, or weights
  rounded beyond float16's own rounding (probabilities then far from the float32 bundle's)."""
  ensemble, float32 = exported
  export(ensemble, tmp_path / 'half', 'tiny', '0.1', 'float16')
  half = tmp_path / 'half'
  sizes = [(folder / 'weights' / 'member0.safetensors').stat().st_size for folder in (float32, half)]
  assert sizes[1] < 0.55 * sizes[0]
  stored = load_file(half / 'weights' / 'member0.safetensors')
  assert {v.dtype for k, v in stored.items() if k.startswith('params/')} == {np.dtype(np.float16)}
  assert {v.dtype for k, v in stored.items() if k.startswith('batch_stats/')} == {np.dtype(np.float32)}
  loaded = load_bundle(half, 'segment')
  assert {leaf.dtype for leaf in safetensors_io.flatten(loaded.members[0].variables).values()} == {np.dtype(np.float32)}
  assert json.loads((half / 'model.json').read_text())['weights_dtype'] == 'float16'
  images, _, patients = _decision_set(phantom_runs_data, ensemble)
  ours, theirs = (Scorer(None, path).score(images, patients) for path in (half, float32))
  np.testing.assert_allclose(ours.probability, theirs.probability, atol=2e-2)


def test_the_dtype_check_chooses_float16_only_when_nothing_changes(exported, phantom_runs_data, tmp_path):
  """bench/bundle_dtype.py on the phantom ensemble: its counts are those of the two bundles it
  wrote, scored here again, and it chooses float16 exactly when no label and no mask pixel differ.
  Catches a verdict that ignores the masks, or counts taken on other slices than the decision set's."""
  from bench.bundle_dtype import compare_dtypes
  ensemble, _ = exported
  found = compare_dtypes(ensemble, phantom_runs_data, tmp_path)
  images, _, patients = _decision_set(phantom_runs_data, ensemble)
  full, half = (Scorer(None, tmp_path / dtype).score(images, patients) for dtype in ('float32', 'float16'))
  assert found['slices'] == len(images)
  assert found['labels_differing'] == int(np.sum(full.label != half.label))
  assert found['mask_pixels_differing'] == int(np.sum(full.mask != half.mask))
  assert found['chosen'] == ('float16' if found['labels_differing'] == found['mask_pixels_differing'] == 0 else 'float32')
  assert found['weights_bytes']['float16'] < 0.55 * found['weights_bytes']['float32']
