"""`jaxbrain predict` on DICOM series: the same answer as for the same volume as NIfTI, a DICOM SEG
beside it, and no patient identifier in what it writes."""
import csv
import json

import nibabel as nib
import numpy as np
import pytest

from jaxbrain import cli
from jaxbrain.data import kaggle3m, nifti
from jaxbrain.data.phantom import write_nifti_phantom
from tests.data.dicom_series import DESCRIPTIONS, PATIENT, as_enhanced, as_rle, nifti_case_as_dicom

pytest.importorskip('pydicom')
hd = pytest.importorskip('highdicom')
pytest.importorskip('SimpleITK')


def _predict(inputs, segmenter, out, *flags) -> int:
  return cli.main(['predict', *map(str, inputs), '--seg-run', str(segmenter), '--out', str(out), '--no-progress',
                   *flags])


def _mask(out, case) -> np.ndarray:
  return np.asarray(nib.load(str(out / f'{case}_mask.nii.gz')).dataobj).astype(bool)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
  """Dice of two masks; 1.0 when both are empty (they agree)."""
  total = a.sum() + b.sum()
  return 1.0 if total == 0 else 2 * (a & b).sum() / total


def test_a_dicom_study_predicts_as_its_nifti_case(trained_runs, tmp_path):
  """An axial phantom case as NIfTI and as DICOM studies (single-frame, enhanced multi-frame, RLE):
  each DICOM prediction's mask agrees with the NIfTI one (per-volume Dice >= 0.99; the same voxel
  size, so a tumor volume within the 2% that Dice allows: the DICOM copy's voxels are rounded to
  int16, which moves a few boundary pixels of the tiny phantom segmenter, by how many depends on the
  CPU the suite trains it on), a SEG of the same volume stands beside it, each row names its FLAIR
  slice's file, and no patient name or ID reaches predictions.csv, summary.json or report.html.
  Catches a DICOM case scored in another slice order or orientation than its NIfTI twin, a voxel
  size read otherwise, a SEG out of step with the NIfTI mask, rows naming the folder, and
  identifiers copied from the headers."""
  _, segmenter = trained_runs
  files, _ = write_nifti_phantom(tmp_path / 'nifti', n_slices=12, seed=7, axcodes='LPS', spacing=(0.9, 0.9, 2.5))
  study = tmp_path / 'study'
  nifti_case_as_dicom(files, study)
  assert _predict([tmp_path / 'nifti'], segmenter, tmp_path / 'out_nifti') == 0
  reference = _mask(tmp_path / 'out_nifti', 'phantom007')
  reference_entry = json.loads((tmp_path / 'out_nifti' / 'summary.json').read_text())['phantom007']
  reference_ml = reference_entry['tumor_volume_ml']
  voxel_ml = reference_ml / reference_entry['volume_voxels']
  assert reference.sum() > 0
  variants = {'study': study, 'enhanced': as_enhanced(study, tmp_path / 'enhanced'),
              'rle': as_rle(study, tmp_path / 'rle')}
  for name, folder in variants.items():
    out = tmp_path / f'out_{name}'
    assert _predict([folder], segmenter, out) == 0
    assert _dice(_mask(out, name), reference) >= 0.99, name
    entry = json.loads((out / 'summary.json').read_text())[name]
    assert entry['tumor_volume_ml'] / entry['volume_voxels'] == pytest.approx(voxel_ml, rel=1e-9), name
    assert entry['tumor_volume_ml'] == pytest.approx(reference_ml, rel=0.02), name
    assert entry['shape']['volume_ml'] == entry['tumor_volume_ml'], name
    assert entry['shape']['bounding_ellipsoid_volume_ratio'] == pytest.approx(
        reference_entry['shape']['bounding_ellipsoid_volume_ratio'], abs=0.05), name
    seg = hd.seg.segread(out / entry['dicom_seg'])
    assert int(np.asarray(seg.pixel_array).sum()) == entry['volume_voxels'], name
    for written in ('predictions.csv', 'summary.json', 'report.html'):
      text = (out / written).read_text()
      assert not any(identifier in text for identifier in PATIENT.values()), (name, written)
  with open(tmp_path / 'out_study' / 'predictions.csv') as f:
    paths = [row['path'] for row in csv.DictReader(f)]
  assert len(set(paths)) == 12 and all(path.startswith(str(study / 'flair')) for path in paths)
  # the same series named one folder each: the same masks, the case named after the study folder
  named = {f'--{channel}': str(study / channel) for channel in DESCRIPTIONS}
  assert _predict([], segmenter, tmp_path / 'out_named', *[x for pair in named.items() for x in pair]) == 0
  np.testing.assert_array_equal(_mask(tmp_path / 'out_named', 'study'), _mask(tmp_path / 'out_study', 'study'))


def test_dicom_inputs_refused_at_the_command_line(trained_runs, tmp_path, capsys):
  """A lone DICOM file, and --t1 --flair --t1ce mixing a NIfTI file with DICOM folders: exit 2 with
  one line saying what to give. Catches a DICOM file decoded as a slice image."""
  _, segmenter = trained_runs
  files, _ = write_nifti_phantom(tmp_path / 'nifti', n_slices=6, seed=3)
  study = tmp_path / 'study'
  nifti_case_as_dicom(files, study)
  one = next((study / 'flair').iterdir())
  assert _predict([one], segmenter, tmp_path / 'o1') == 2
  assert 'a DICOM file alone cannot be scored' in capsys.readouterr().err
  assert _predict([], segmenter, tmp_path / 'o2', '--t1', str(files['t1']), '--flair', str(study / 'flair'),
                  '--t1ce', str(study / 't1ce')) == 2
  assert 'mix folders and files' in capsys.readouterr().err


@pytest.mark.realdata
def test_a_real_patient_as_dicom_predicts_as_the_same_volume_as_nifti(real_data, trained_runs, tmp_path):
  """One shared LGG patient's slices stacked into a volume (1 x 1 mm pixels, 3 mm between slices,
  stated: the Kaggle slices carry no spacing; slice 1 taken as the most inferior) and stored as
  NIfTI and as three DICOM series: the segmenter's pixel probabilities and masks agree (Dice >= 0.99,
  the volume within 1%). Catches a DICOM reading of real scanner-sized data in another slice order,
  orientation or intensity scale than the NIfTI reading."""
  _, segmenter = trained_runs
  patient = sorted(p for p in real_data.iterdir() if p.is_dir())[0]
  images = sorted(patient.glob('*_[0-9]*.*'), key=lambda p: kaggle3m.slice_identity(p)[1])
  stack = np.stack([kaggle3m.read_image(p) for p in images if not p.stem.endswith('_mask')])
  case = tmp_path / 'nifti'
  case.mkdir()
  files = {}
  for c, (channel, suffix) in enumerate((('t1', '_t1'), ('flair', '_flair'), ('t1ce', '_t1ce'))):
    files[channel] = case / f'lgg{suffix}.nii.gz'
    nib.save(nib.Nifti1Image(nifti.from_display(stack[..., c]).astype(np.int16), np.diag([1.0, 1.0, 3.0, 1.0])),
             str(files[channel]))
  nifti_case_as_dicom(files, tmp_path / 'study')
  assert _predict([case], segmenter, tmp_path / 'out_nifti') == 0
  assert _predict([tmp_path / 'study'], segmenter, tmp_path / 'out_dicom') == 0
  ours = nib.load(str(tmp_path / 'out_dicom' / 'study_probability.nii.gz')).get_fdata()
  theirs = nib.load(str(tmp_path / 'out_nifti' / 'lgg_probability.nii.gz')).get_fdata()
  assert ours.shape == theirs.shape == stack.shape[2:0:-1] + (len(stack),) and np.abs(ours - theirs).max() < 1e-3
  assert _dice(_mask(tmp_path / 'out_dicom', 'study'), _mask(tmp_path / 'out_nifti', 'lgg')) >= 0.99
  volumes = [json.loads((tmp_path / out / 'summary.json').read_text())[name]['tumor_volume_ml']
             for out, name in (('out_dicom', 'study'), ('out_nifti', 'lgg'))]
  assert volumes[0] == pytest.approx(volumes[1], rel=0.01, abs=1e-9)


def test_a_study_whose_seg_cannot_be_made_keeps_every_other_output(trained_runs, tmp_path, capsys):
  """A study whose series carry no Frame of Reference UID (non-conformant; such exports exist):
  highdicom refuses to make its SEG. Catches that refusal ending the command as an unexpected error
  after the masks were written and before predictions.csv, summary.json and the page were (the
  user gets no answer), and a skipped SEG not said on the console, in the summary and on the page."""
  import html
  import pydicom
  _, segmenter = trained_runs
  files, _ = write_nifti_phantom(tmp_path / 'nifti', n_slices=8, seed=7, axcodes='LPS', spacing=(0.9, 0.9, 2.5))
  study = tmp_path / 'study'
  nifti_case_as_dicom(files, study)
  for path in study.rglob('*.dcm'):
    header = pydicom.dcmread(path)
    del header.FrameOfReferenceUID
    header.save_as(path)
  out = tmp_path / 'out'
  with pytest.warns(UserWarning, match='study: no DICOM SEG written .*Frame Of Reference'):
    assert _predict([study], segmenter, out) == 0
  assert 'unexpected error' not in capsys.readouterr().err
  entry = json.loads((out / 'summary.json').read_text())['study']
  assert 'Frame Of Reference' in entry['dicom_seg_skipped'] and 'dicom_seg' not in entry
  assert (out / 'predictions.csv').is_file() and (out / 'study_mask.nii.gz').is_file()
  assert not (out / 'study_seg.dcm').exists()
  assert 'study: no DICOM SEG written' in html.unescape((out / 'report.html').read_text())
