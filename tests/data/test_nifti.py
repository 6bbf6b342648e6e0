"""NIfTI cases: finding the three volumes, reading them as LGG-like slices in any orientation, and
putting masks back in the input's frame."""
import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from jaxbrain.data import kaggle3m, nifti
from jaxbrain.data.phantom import write_nifti_phantom


def _touch(folder, *names):
  folder.mkdir(parents=True, exist_ok=True)
  for name in names:
    nib.save(nib.Nifti1Image(np.ones((4, 4, 3), np.float32), np.eye(4)), str(folder / name))


def test_find_case_matches_suffixes_exactly(tmp_path):
  """Catches `_t1` matching `_t1ce` (substring or prefix matching), and either BraTS naming
  scheme not recognized."""
  _touch(tmp_path / 'a', 'BraTS2021_00001_t1ce.nii.gz', 'BraTS2021_00001_flair.nii.gz', 'BraTS2021_00001_t1.nii.gz',
         'BraTS2021_00001_seg.nii.gz')
  found = nifti.find_case(tmp_path / 'a')
  assert {m: p.name for m, p in found.items()} == {
      't1': 'BraTS2021_00001_t1.nii.gz', 'flair': 'BraTS2021_00001_flair.nii.gz', 't1ce': 'BraTS2021_00001_t1ce.nii.gz'}
  assert nifti.case_name(found['flair']) == 'BraTS2021_00001'
  _touch(tmp_path / 'b', 'BraTS-GLI-00000-000-t1n.nii', 'BraTS-GLI-00000-000-t2f.nii', 'BraTS-GLI-00000-000-t1c.nii')
  found = nifti.find_case(tmp_path / 'b')
  assert found['t1ce'].name == 'BraTS-GLI-00000-000-t1c.nii'
  assert nifti.case_name(found['flair']) == 'BraTS-GLI-00000-000'


def test_a_preprocessed_case_with_bare_sequence_names_is_named_after_its_folder(tmp_path):
  """A case folder as BraTS toolkits write a preprocessed case (`t1n.nii.gz`, `t2f.nii.gz`,
  `t1c.nii.gz`, `t2w.nii.gz`). Catches it refused as having no t1 volume, `t1n` taken for `t1c` (or
  T2-weighted `t2w` for anything), and the case named after its FLAIR file ("t2f")."""
  _touch(tmp_path / 'case7', 't1n.nii.gz', 't2f.nii.gz', 't1c.nii.gz', 't2w.nii.gz')
  found = nifti.find_case(tmp_path / 'case7')
  assert {m: p.name for m, p in found.items()} == {'t1': 't1n.nii.gz', 'flair': 't2f.nii.gz', 't1ce': 't1c.nii.gz'}
  assert nifti.case_name(found['flair']) == 'case7'
  _touch(tmp_path / 'older', 't1.nii.gz', 'flair.nii.gz', 't1ce.nii.gz')
  assert {m: p.name for m, p in nifti.find_case(tmp_path / 'older').items()} == {
      't1': 't1.nii.gz', 'flair': 'flair.nii.gz', 't1ce': 't1ce.nii.gz'}


def test_clear_errors_name_the_file(tmp_path):
  """Catches a missing modality, a 4D file, a non-NIfTI file, a .nii.gz cut short (its header reads,
  its voxels do not), and volumes of different shapes or affines being accepted (or failing with a
  traceback instead of one line naming the file)."""
  _touch(tmp_path / 'missing', 'x_t1.nii.gz', 'x_flair.nii.gz')
  with pytest.raises(kaggle3m.DataError, match='no t1ce volume'):
    nifti.find_case(tmp_path / 'missing')
  files, _ = write_nifti_phantom(tmp_path / 'ok', n_slices=6, in_plane=64)
  cases = {
      '4D': lambda f: nib.save(nib.Nifti1Image(np.ones((64, 64, 6, 2), np.float32), np.eye(4)), str(f)),
      'not a readable NIfTI': lambda f: f.write_bytes(b'not a volume'),
      'cut short': lambda f: f.write_bytes(files['t1ce'].read_bytes()[:2000]),
      'shape': lambda f: nib.save(nib.Nifti1Image(np.ones((64, 64, 5), np.float32), np.eye(4)), str(f)),
      'affine differs': lambda f: nib.save(nib.Nifti1Image(np.ones((64, 64, 6), np.float32), np.diag([2, 1, 1, 1])),
                                           str(f)),
  }
  for problem, damage in cases.items():
    broken = dict(files, t1ce=tmp_path / f'{problem.replace(" ", "_")}_t1ce.nii.gz')
    damage(broken['t1ce'])
    with pytest.raises(kaggle3m.DataError, match=problem) as error:
      nifti.read_case(broken)
    assert str(broken['t1ce']) in str(error.value)


def test_scaling_ignores_scanner_units_and_keeps_background():
  """Catches scaling that depends on the scanner's units (a fixed divisor), that lifts background
  above 0, or that does not put the 99th percentile of tissue where the LGG slices have it."""
  rng = np.random.default_rng(0)
  volume = np.where(rng.random((20, 20, 20)) < 0.3, 0.0, rng.gamma(4.0, 50.0, (20, 20, 20)))
  scaled = nifti.scale_to_uint8(volume, 137.0)
  assert np.array_equal(scaled, nifti.scale_to_uint8(volume * 9.7, 137.0))
  assert (scaled[volume == 0] == 0).all()
  assert abs(np.percentile(scaled[volume > 0], 99) - 137) <= 1
  assert not nifti.scale_to_uint8(np.zeros((3, 3, 3)), 137.0).any()


@pytest.mark.parametrize('axcodes', ['RAS', 'LPS', 'PSR', 'ILA'])
def test_any_orientation_reads_the_same_slices_and_masks_return_to_their_voxels(tmp_path, axcodes):
  """Catches reading a volume in its stored voxel order (slices of another axis, or mirrored), and
  masks written back in the canonical rather than the input's voxel order: the phantom tumor's
  voxels must come back where they were in every orientation."""
  files, truth = write_nifti_phantom(tmp_path / axcodes, n_slices=10, seed=4, axcodes=axcodes)
  reference, _ = write_nifti_phantom(tmp_path / 'ras', n_slices=10, seed=4, axcodes='RAS')
  case = nifti.read_case(files)
  assert np.array_equal(case.slices, nifti.read_case(reference).slices)
  from jaxbrain.data.phantom import _Patient
  anatomy = _Patient(np.random.default_rng(4), 10, 0.35)
  rendered = [anatomy.slice(k) for k in range(10)]
  slices = np.stack([image for image, _ in rendered])
  assert np.corrcoef(case.slices[..., 1].ravel(), slices[..., 1].ravel())[0, 1] > 0.99  # upright, unmirrored
  masks = np.stack([mask for _, mask in rendered])
  out = tmp_path / f'{axcodes}_mask.nii.gz'
  nifti.write_volume(case, masks.astype(bool), out)
  written = nib.load(str(out))
  assert written.shape == truth.shape and np.allclose(written.affine, nib.load(str(files['flair'])).affine)
  back = np.asarray(written.dataobj).astype(bool)
  assert 2 * (back & truth).sum() / (back.sum() + truth.sum()) > 0.97  # 256 -> 240 px resampling only


@pytest.mark.realdata
def test_lgg_p99_is_the_shared_patients_median(real_data):
  """Catches a wrong or stale LGG_P99: recomputed from the shared LGG slices (median over patients
  of each channel's 99th percentile of its positive pixels)."""
  per_patient = []
  for folder in sorted(real_data.glob('TCGA_*')):
    volume = np.stack([np.asarray(Image.open(f)) for f in folder.iterdir() if f.suffix in ('.png', '.tif')
                       and not f.stem.endswith('_mask')])
    per_patient.append([np.percentile(volume[..., c][volume[..., c] > 0], 99) for c in range(3)])
  assert np.allclose(np.median(per_patient, 0), nifti.LGG_P99, rtol=0.05)
