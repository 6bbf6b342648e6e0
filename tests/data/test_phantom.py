import csv
import filecmp

import numpy as np
import pytest

from jaxbrain.data import kaggle3m, phantom, write_phantom


def test_layout_matches_kaggle3m(phantom_tif):
  records = kaggle3m.scan(phantom_tif)
  patients = sorted({r.patient for r in records})
  assert len(patients) == 6
  assert all(r.image_path.suffix == '.tif' and r.mask_path.name.endswith('_mask.tif') for r in records)
  with open(phantom_tif / 'data.csv') as f:
    rows = list(csv.DictReader(f))
  assert sorted(row['Patient'] for row in rows) == patients
  assert list(rows[0]) == ['Patient', 'RNASeqCluster', 'MethylationCluster', 'miRNACluster', 'CNCluster',
                           'RPPACluster', 'OncosignCluster', 'COCCluster', 'histological_type',
                           'neoplasm_histologic_grade', 'tumor_tissue_site', 'laterality', 'tumor_location',
                           'gender', 'age_at_initial_pathologic', 'race', 'ethnicity', 'death01']
  image, mask = kaggle3m.read_slice(records[0])
  assert image.shape == (256, 256, 3) and image.dtype == np.uint8 and mask.shape == (256, 256)


def test_deterministic_for_a_seed(tmp_path):
  a = write_phantom(tmp_path / 'a', n_patients=2, slices_per_patient=(6, 8), seed=7, image_format='png')
  b = write_phantom(tmp_path / 'b', n_patients=2, slices_per_patient=(6, 8), seed=7, image_format='png')
  c = write_phantom(tmp_path / 'c', n_patients=2, slices_per_patient=(6, 8), seed=8, image_format='png')
  files_a = sorted(p.relative_to(a) for p in a.rglob('*.png'))
  assert files_a == sorted(p.relative_to(b) for p in b.rglob('*.png'))
  assert all(filecmp.cmp(a / f, b / f, shallow=False) for f in files_a)
  image_a = kaggle3m.read_image(kaggle3m.scan(a)[3].image_path)
  image_c = kaggle3m.read_image(kaggle3m.scan(c)[3].image_path)
  assert not np.array_equal(image_a, image_c)


def test_tumor_fraction_and_consecutive_slices(phantom_tif):
  records = kaggle3m.scan(phantom_tif)
  labels = np.array([kaggle3m.read_mask(r.mask_path).any() for r in records])
  assert 0.25 <= labels.mean() <= 0.45
  for patient in {r.patient for r in records}:
    tumor = np.flatnonzero([l for r, l in zip(records, labels) if r.patient == patient])
    assert len(tumor) > 0
    assert np.array_equal(tumor, np.arange(tumor[0], tumor[-1] + 1)), 'tumor slices must be consecutive'


def test_mask_is_exactly_the_hyperintense_tumor(phantom_tif):
  """Inside the mask FLAIR is bright; just outside it (same slice, in the brain) it is not."""
  for record in kaggle3m.scan(phantom_tif):
    image, mask = kaggle3m.read_slice(record)
    if not mask.any():
      continue
    flair = image[..., 1].astype(float)
    ring = np.zeros_like(mask, bool)
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min() - 6, ys.max() + 7, xs.min() - 6, xs.max() + 7
    ring[max(y0, 0):y1, max(x0, 0):x1] = True
    ring &= (mask == 0) & (flair > 40)  # nearby brain tissue, not background or ventricle
    assert flair[mask == 1].mean() > flair[ring].mean() + 50
    assert np.percentile(flair[mask == 1], 5) > np.percentile(flair[ring], 95)


def test_refuses_existing_folder_and_leaves_nothing_on_failure(tmp_path):
  (tmp_path / 'taken').mkdir()
  with pytest.raises(FileExistsError):
    write_phantom(tmp_path / 'taken')
  with pytest.raises(ValueError):
    write_phantom(tmp_path / 'new', image_format='jpg')
  assert sorted(p.name for p in tmp_path.iterdir()) == ['taken']


def test_processes_writing_one_phantom_together_both_succeed(tmp_path, monkeypatch):
  """Two runs of a sweep started together on the demo data each write its phantom; the one that
  finishes second must take the first one's tree (exist_ok) instead of failing on the rename
  (the bug: `OSError: Directory not empty` from the losing process), and leave no partial folder."""
  root = tmp_path / 'kaggle_3m'
  original, raced = phantom._Patient, []

  def patient_while_another_process_finishes(*args, **kwargs):
    if not raced:
      raced.append('the other process')
      write_phantom(root, n_patients=2, slices_per_patient=(6, 8), seed=3)
    return original(*args, **kwargs)

  monkeypatch.setattr(phantom, '_Patient', patient_while_another_process_finishes)
  assert write_phantom(root, n_patients=2, slices_per_patient=(6, 8), seed=3, exist_ok=True) == root
  assert raced == ['the other process']
  assert sorted(p.name for p in tmp_path.iterdir()) == ['kaggle_3m']
  monkeypatch.setattr(phantom, '_Patient', original)
  with pytest.raises(FileExistsError):
    write_phantom(root, n_patients=2, slices_per_patient=(6, 8), seed=3)
  assert write_phantom(root, n_patients=2, exist_ok=True) == root
