"""DICOM series in: read as independent tools read them, matched by description, refused when damaged."""
import shutil
import subprocess
import sys

import numpy as np
import pytest

from jaxbrain.data import dicom, nifti
from jaxbrain.data.kaggle3m import DataError
from jaxbrain.data.phantom import write_nifti_phantom
from tests.data.dicom_series import as_enhanced, as_rle, nifti_case_as_dicom

pydicom = pytest.importorskip('pydicom')
sitk = pytest.importorskip('SimpleITK')


@pytest.fixture(scope='module')
def study(tmp_path_factory):
  """A phantom case stored as PSR NIfTI with unequal in-plane spacing, and the same case as a DICOM
  study (three series of sagittal single-frame files, shuffled file names): (NIfTI files, study)."""
  folder = tmp_path_factory.mktemp('dicom')
  files, _ = write_nifti_phantom(folder / 'nifti', n_slices=10, seed=7, axcodes='PSR', spacing=(0.8, 0.95, 2.5))
  nifti_case_as_dicom(files, folder / 'study')
  return files, folder / 'study'


def copy_of(study, tmp_path):
  return shutil.copytree(study, tmp_path / 'study')


def lps(volume: dicom.SeriesVolume) -> np.ndarray:
  return np.diag([-1.0, -1.0, 1.0, 1.0]) @ volume.image.affine


def test_a_series_reads_as_simpleitk_reads_it(study, tmp_path):
  """Voxels (Rescale Slope 2.5 and Intercept -7 written into every file) and geometry against
  SimpleITK's series reader. Catches slices ordered by file name (the names are shuffled) or by
  instance number, the rescale ignored, pixel spacings swapped (0.8 vs 0.95 mm) and DICOM's LPS
  taken for RAS."""
  folder = copy_of(study[1], tmp_path) / 'flair'
  for path in folder.iterdir():
    dataset = pydicom.dcmread(path)
    dataset.RescaleSlope, dataset.RescaleIntercept = 2.5, -7
    dataset.InstanceNumber = 1
    dataset.save_as(path)
  reader = sitk.ImageSeriesReader()
  reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
  reference = reader.Execute()
  volume = dicom.read_series(dicom.one_series(folder))
  np.testing.assert_array_equal(np.asarray(volume.image.dataobj).transpose(2, 1, 0), sitk.GetArrayFromImage(reference))
  expected = np.eye(4)
  expected[:3, :3] = np.asarray(reference.GetDirection()).reshape(3, 3) * np.asarray(reference.GetSpacing())
  expected[:3, 3] = reference.GetOrigin()
  np.testing.assert_allclose(lps(volume), expected, atol=1e-3)


def test_dcm2niix_reads_the_same_volume(study, tmp_path):
  """dcm2niix (an independent converter) makes the FLAIR series a NIfTI volume whose shape and
  affine, both brought to the closest canonical frame, equal jaxbrain's reading within 1e-3 mm.
  Catches a wrong slice direction or origin that SimpleITK's own writer would share with its reader."""
  nib = pytest.importorskip('nibabel')
  if not shutil.which('dcm2niix'):
    pytest.skip('dcm2niix not installed (.ci/run installs it)')
  subprocess.run(['dcm2niix', '-z', 'y', '-f', 'flair', '-o', str(tmp_path), str(study[1] / 'flair')],
                 check=True, capture_output=True)
  converted = nib.as_closest_canonical(nib.load(str(tmp_path / 'flair.nii.gz')))
  ours = nib.as_closest_canonical(dicom.read_series(dicom.one_series(study[1] / 'flair')).image)
  assert converted.shape == ours.shape
  np.testing.assert_allclose(converted.affine, ours.affine, atol=1e-3)
  np.testing.assert_array_equal(np.asarray(converted.dataobj), np.asarray(ours.dataobj))


def test_a_dicom_study_reads_as_its_nifti_case(study):
  """The study folder's series matched by description give the NIfTI case's slices (within the
  int16 rounding of the stored voxels: one gray level) and names the case after the folder.
  Catches channels matched to the wrong series (the slices differ by far more than a gray level),
  a voxel size taken from the pixel spacing alone, and an axial slice of a sagittal series named by
  one of its files."""
  case = dicom.read_folder(study[1])
  reference = nifti.read_case(study[0])
  assert case.name == 'study' and case.slices.shape == reference.slices.shape
  assert np.abs(case.slices.astype(int) - reference.slices).max() <= 1
  assert case.voxel_ml == pytest.approx(reference.voxel_ml)
  assert set(case.slice_paths) == {str(study[1] / 'flair')}  # sagittal series: an axial slice crosses every file


def test_enhanced_multiframe_and_rle_compressed_series_read_alike(study, tmp_path):
  """highdicom's legacy conversion (one enhanced multi-frame file per series, geometry in
  functional groups) and pydicom's RLE encoder give the same case as the single-frame files.
  Catches per-frame positions read from the top level (absent there) and undecoded pixels."""
  reference = dicom.read_folder(study[1])
  for kind, convert in (('enhanced', as_enhanced), ('rle', as_rle)):
    convert(study[1], tmp_path / kind)
    case = dicom.read_folder(tmp_path / kind)
    np.testing.assert_array_equal(case.slices, reference.slices)
    np.testing.assert_allclose(case.affine, reference.affine, atol=1e-4)


@pytest.mark.parametrize('description, channel', [
    ('AX T2 FLAIR', 'flair'), ('t2f', 'flair'), ('Sag 3D FLAIR fs', 'flair'), ('AX T1 SE', 't1'), ('T1w_MPR', 't1'),
    ('AX T1 POST GD', 't1ce'), ('T1+C axial', 't1ce'), ('t1c', 't1ce'), ('T1 CE', 't1ce'), ('T1W_3D_TFE contrast', 't1ce'),
    ('T1 postcontrast', 't1ce'), ('AX T2 FSE', None), ('DWI b1000', None), ('localizer', None), ('SPACE T2', None)])
def test_the_default_match_by_series_description(description, channel):
  """The documented rule, word by word. Catches "ce" found inside words (SPACE, sequence), T2
  series taken for T1, and post-contrast words missed."""
  assert dicom.sequence_of(description) == channel


def test_two_flair_series_are_refused_with_the_series_listed(study, tmp_path):
  """A second FLAIR series (another Series Instance UID) makes the match ambiguous. Catches the
  first one found taken silently."""
  folder = copy_of(study[1], tmp_path)
  second = shutil.copytree(folder / 'flair', folder / 'flair2')
  uid = pydicom.uid.generate_uid()
  for path in second.iterdir():
    dataset = pydicom.dcmread(path)
    dataset.SeriesInstanceUID, dataset.SeriesDescription = uid, 'AX FLAIR repeat'
    dataset.save_as(path)
  with pytest.raises(DataError, match=r'2 FLAIR series by the default match .* series "AX T2 FLAIR" .* series "AX FLAIR '
                                      r'repeat" .*--t1 --flair --t1ce'):
    dicom.read_folder(folder)


def _edit(paths, **attributes):
  for path in paths:
    dataset = pydicom.dcmread(path)
    for name, value in attributes.items():
      if value is None:
        delattr(dataset, name)
      else:
        setattr(dataset, name, value)
    dataset.save_as(path)


def _by_position(folder):
  return sorted(folder.iterdir(), key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[0]))


def _mislabelled_compression(folder):
  """One file's RLE-compressed pixels labelled JPEG 2000: no installed decoder reads them."""
  path = _by_position(folder)[0]
  dataset = pydicom.dcmread(path)
  dataset.compress(pydicom.uid.RLELossless)
  dataset.file_meta.TransferSyntaxUID = pydicom.uid.JPEG2000Lossless
  dataset.save_as(path, enforce_file_format=True)


DAMAGE = {
    'not DICOM': (lambda f: (f / 'notes.txt').write_text('scan notes'), r'notes.txt: not a DICOM file'),
    'no pixel data': (lambda f: _edit(_by_position(f)[3:4], PixelData=None), r'without pixel data'),
    'a gap': (lambda f: _by_position(f)[4].unlink(), r'-> .*: 1.60 mm between slices where .* steps 0.80 mm: slices are '
              r'missing \(a gap\)'),
    'a repeated slice': (lambda f: shutil.copy(_by_position(f)[4], f / 'copy.dcm'), r'the same position along the slice '
                         r'normal .* a repeated slice'),
    'another orientation': (lambda f: _edit(_by_position(f)[2:3], ImageOrientationPatient=[0, 1, 0, 0.1, 0, -0.995]),
                            r'orientation \[.*\] differs from'),
    'another spacing': (lambda f: _edit(_by_position(f)[2:3], PixelSpacing=[0.9, 0.9]), r'pixel spacing \[0.9, 0.9\] mm '
                        r'differs'),
    'not MR': (lambda f: _edit(f.iterdir(), Modality='CT'), r'series "AX T2 FLAIR" \(CT, .*modality CT, not MR'),
    'no series UID': (lambda f: _edit(_by_position(f)[:1], SeriesInstanceUID=None), r'has no Series Instance UID'),
    'two series': (lambda f: _edit(_by_position(f)[:5], SeriesInstanceUID='1.2.3.4'), r'holds 2 series .* give a folder '
                   r'per series'),
    'undecodable compression': (_mislabelled_compression, r'its pixel data, compressed as JPEG 2000'),
}


@pytest.mark.parametrize('damage', DAMAGE)
def test_damaged_series_are_refused_in_one_line_naming_the_file(study, tmp_path, damage):
  """Each damage named by its parameter, refused with one line naming the file or series and the
  fault. Catches a gap, a repeated position, a tilted slice, another spacing or a non-MR series
  read into a volume that is not the scan, and files skipped or crashing without their name."""
  folder = copy_of(study[1], tmp_path) / 'flair'
  damaging, message = DAMAGE[damage]
  damaging(folder)
  with pytest.raises(DataError, match=message) as error:
    dicom.read_series(dicom.one_series(folder))
  assert '\n' not in str(error.value) and str(folder) in str(error.value)


def test_dicom_without_pydicom_names_the_extra(study, monkeypatch):
  """Catches an ImportError traceback where the user needs the install command."""
  monkeypatch.setitem(sys.modules, 'pydicom', None)
  with pytest.raises(DataError, match=r"pip install 'jaxbrain\[dicom\]'"):
    dicom.find_series(study[1])
