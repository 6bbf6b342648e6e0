"""DICOM SEG out: valid by dciodvfy, read back by highdicom as the mask, in the source's geometry."""
import shutil
import subprocess

import numpy as np
import pytest

from jaxbrain.data import dicom, dicom_seg, nifti
from jaxbrain.data.phantom import write_nifti_phantom
from tests.data.dicom_series import PATIENT, as_enhanced, nifti_case_as_dicom

pytest.importorskip('pydicom')
hd = pytest.importorskip('highdicom')
pytest.importorskip('SimpleITK')


@pytest.fixture(scope='module')
def studies(tmp_path_factory):
  """An axial phantom study as single-frame files, and the same series as enhanced multi-frame files."""
  folder = tmp_path_factory.mktemp('seg')
  files, _ = write_nifti_phantom(folder / 'nifti', n_slices=10, seed=5, axcodes='LPS', spacing=(0.9, 0.9, 2.5))
  single = folder / 'single'
  nifti_case_as_dicom(files, single)
  return {'single-frame': single, 'multi-frame': as_enhanced(single, folder / 'multi')}


def _read_back(seg, volume: dicom.SeriesVolume) -> np.ndarray:
  """The SEG's pixels per source frame, in the series' volume order [columns, rows, frames]."""
  if volume.frames[0].index is None:
    planes = seg.get_pixels_by_source_instance([str(f.dataset.SOPInstanceUID) for f in volume.frames],
                                               segment_numbers=[1], assert_missing_frames_are_empty=True)
  else:
    planes = seg.get_pixels_by_source_frame(str(volume.frames[0].dataset.SOPInstanceUID),
                                            [f.index + 1 for f in volume.frames], segment_numbers=[1],
                                            assert_missing_frames_are_empty=True)
  return planes[..., 0].transpose(2, 1, 0)


@pytest.mark.parametrize('kind', ['single-frame', 'multi-frame'])
def test_the_seg_is_valid_and_reads_back_as_the_mask(studies, tmp_path, kind):
  """A mask written as a SEG passes dciodvfy without an error line, and highdicom reads back, frame
  by source frame, exactly the mask volume. Catches frames put in file or volume order where the
  source's own order is meant (a multi-frame source), transposed planes, a SEG that does not
  reference its source, and the patient identifiers the standard requires left out."""
  case = dicom.read_folder(studies[kind])
  masks = case.slices[..., 1] > 140  # a bright, irregular region: any plane out of place would show
  mask = nifti.to_input_frame(case, masks)
  path = tmp_path / 'seg.dcm'
  assert dicom_seg.write_seg(case.flair_series, mask, path, '9.9', '/runs/seg01/run-a', 'run-a') == mask.sum() > 0
  seg = hd.seg.segread(path)
  np.testing.assert_array_equal(_read_back(seg, case.flair_series), mask)
  source = case.flair_series.frames[0].dataset
  assert seg.PatientName == PATIENT['0010|0010'] and seg.PatientID == PATIENT['0010|0020']
  assert seg.StudyInstanceUID == source.StudyInstanceUID and seg.FrameOfReferenceUID == source.FrameOfReferenceUID
  segment = seg.SegmentSequence[0]
  assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == '108369006'
  algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
  assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ('jaxbrain', '9.9')
  if not shutil.which('dciodvfy'):
    pytest.skip('dciodvfy (Debian dicom3tools) not installed (.ci/run installs it)')
  report = subprocess.run(['dciodvfy', str(path)], capture_output=True, text=True)
  errors = [line for line in (report.stdout + report.stderr).splitlines() if line.startswith('Error')]
  assert not errors, errors


def test_an_empty_mask_still_makes_a_seg(studies, tmp_path):
  """No tumor found: a SEG with empty frames rather than a failure. Catches empty frames always
  left out (highdicom refuses a SEG whose frames were all left out, so predict would fail on every
  tumor-free scan)."""
  case = dicom.read_folder(studies['single-frame'])
  mask = np.zeros(case.shape, np.uint8)
  assert dicom_seg.write_seg(case.flair_series, mask, tmp_path / 'seg.dcm', '9.9', 'run', 'run') == 0
  assert not _read_back(hd.seg.segread(tmp_path / 'seg.dcm'), case.flair_series).any()


def test_a_long_model_name_still_makes_a_seg(studies, tmp_path):
  """A model named at length (a bundle: name, version and its 64-character sha256; a run folder of
  any name) is written whole as the algorithm's parameter and cut to DICOM's 64 characters as the
  device's serial number. Catches the whole name put where DICOM allows 64 characters: highdicom
  then refuses the SEG, and predict writes none for every DICOM study scored with a bundle."""
  case = dicom.read_folder(studies['single-frame'])
  mask = nifti.to_input_frame(case, case.slices[..., 1] > 140)
  sha256 = 'f' * 64
  made_by = f'lgg-seg01 1.0 (sha256 {sha256})'
  for model_id, serial in ((sha256, sha256), ('r' * 80, 'r' * 64)):
    path = tmp_path / f'{len(model_id)}.dcm'
    assert dicom_seg.write_seg(case.flair_series, mask, path, '9.9', made_by, model_id) > 0
    seg = hd.seg.segread(path)
    assert seg.DeviceSerialNumber == serial
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert made_by in algorithm.AlgorithmParameters
