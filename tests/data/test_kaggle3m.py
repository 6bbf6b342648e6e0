"""Scanning and decoding, and a clear error (naming the file) for each kind of bad input."""
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from jaxbrain.data import kaggle3m
from jaxbrain.data.kaggle3m import DataError


@pytest.fixture
def tree(phantom_tif, tmp_path):
  """A private copy of the phantom tree to damage."""
  return shutil.copytree(phantom_tif, tmp_path / 'kaggle_3m')


def first_case(tree):
  return sorted(p for p in tree.iterdir() if p.is_dir())[0]


def test_scan_sorts_and_pairs(phantom_tif):
  records = kaggle3m.scan(phantom_tif)
  keys = [(r.patient, r.slice) for r in records]
  assert keys == sorted(keys)
  assert all(r.mask_path.name == r.image_path.stem + '_mask.tif' for r in records)
  assert {r.institution for r in records} == {'PH', 'QX'}


def test_tif_and_png_decode_identically(tmp_path, phantom_tif):
  record = kaggle3m.scan(phantom_tif)[5]
  image, mask = kaggle3m.read_slice(record)
  Image.open(record.image_path).save(tmp_path / 'x.png')
  Image.open(record.mask_path).save(tmp_path / 'x_mask.png')
  np.testing.assert_array_equal(kaggle3m.read_image(tmp_path / 'x.png'), image)
  np.testing.assert_array_equal(kaggle3m.read_mask(tmp_path / 'x_mask.png'), mask)
  assert set(np.unique(mask)) <= {0, 1}


def test_summarize_counts(phantom_tif):
  records = kaggle3m.scan(phantom_tif)
  tumor = sum(kaggle3m.read_mask(r.mask_path).any() for r in records)
  summary = kaggle3m.summarize(phantom_tif)
  assert (summary['patients'], summary['slices'], summary['tumor_slices']) == (6, len(records), tumor)
  assert sum(i['patients'] for i in summary['institutions'].values()) == 6
  assert summary['channels'] == {'pre-contrast + FLAIR + post-contrast': 6}


def test_channels_present_detects_flair_copies():
  image = np.random.default_rng(0).integers(0, 255, (4, 4, 3), dtype=np.uint8)
  assert kaggle3m.channels_present(image) == kaggle3m.CHANNELS
  image[..., 2] = image[..., 1]
  assert kaggle3m.channels_present(image) == ('pre-contrast', 'FLAIR')


def test_truncated_image(tree):
  path = kaggle3m.scan(tree)[0].image_path
  path.write_bytes(path.read_bytes()[:1000])
  with pytest.raises(DataError, match=f'{path.name}: corrupt or truncated'):
    kaggle3m.summarize(tree)


def test_garbage_bytes_with_image_name(tree):
  path = kaggle3m.scan(tree)[1].mask_path
  path.write_bytes(b'this is not a tiff')
  with pytest.raises(DataError, match=f'{path.name}: not an image file'):
    kaggle3m.summarize(tree)


def test_image_without_mask(tree):
  record = kaggle3m.scan(tree)[2]
  record.mask_path.unlink()
  with pytest.raises(DataError, match=f'{record.image_path.name}: image has no mask'):
    kaggle3m.scan(tree)


def test_mask_without_image(tree):
  record = kaggle3m.scan(tree)[2]
  record.image_path.unlink()
  with pytest.raises(DataError, match=f'{record.mask_path.name}: mask has no image'):
    kaggle3m.scan(tree)


def test_wrong_size(tree):
  record = kaggle3m.scan(tree)[0]
  Image.new('RGB', (128, 128)).save(record.image_path, format='TIFF')
  with pytest.raises(DataError, match='wrong size 128x128, expected 256x256'):
    kaggle3m.read_slice(record)


def test_wrong_mode(tree):
  record = kaggle3m.scan(tree)[0]
  Image.new('L', (256, 256)).save(record.image_path, format='TIFF')
  Image.new('RGB', (256, 256)).save(record.mask_path, format='TIFF')
  with pytest.raises(DataError, match="wrong mode 'L', expected a 3-channel RGB image"):
    kaggle3m.read_image(record.image_path)
  with pytest.raises(DataError, match="wrong mode 'RGB', expected a single-channel mask"):
    kaggle3m.read_mask(record.mask_path)


def test_stray_files_warn_and_are_skipped(tree):
  count = len(kaggle3m.scan(tree))
  case = first_case(tree)
  (case / 'notes.txt').write_text('hello')
  (case / 'Thumbs.db').write_bytes(b'\0')
  with pytest.warns(UserWarning, match='notes.txt: not a slice image'):
    assert len(kaggle3m.scan(tree)) == count


def test_empty_missing_and_foreign_folders(tmp_path):
  with pytest.raises(DataError, match='no such folder'):
    kaggle3m.scan(tmp_path / 'nope')
  (tmp_path / 'empty').mkdir()
  with pytest.raises(DataError, match='empty.*folder is empty'):
    kaggle3m.scan(tmp_path / 'empty')
  (tmp_path / 'photos' / 'holiday').mkdir(parents=True)
  with pytest.raises(DataError, match=r'photos: not a kaggle_3m folder.*found: holiday'):
    kaggle3m.scan(tmp_path / 'photos')
  (tmp_path / 'file.txt').write_text('x')
  with pytest.raises(DataError, match='not a folder'):
    kaggle3m.scan(tmp_path / 'file.txt')


def test_parent_folder_gets_a_hint(tmp_path, phantom_png):
  shutil.copytree(phantom_png, tmp_path / 'lgg' / 'kaggle_3m')
  with pytest.raises(DataError, match='Did you mean .*kaggle_3m'):
    kaggle3m.scan(tmp_path / 'lgg')


def test_empty_patient_folder(tree):
  (tree / 'TCGA_ZZ_9999_20000101').mkdir()
  with pytest.raises(DataError, match='TCGA_ZZ_9999_20000101: patient folder has no slices'):
    kaggle3m.scan(tree)


def test_fingerprint_follows_content_not_modification_times(tree, tmp_path):
  """A copy with fresh modification times is the same data; one byte changed at the same size and
  time is not. Catches a fingerprint of paths, sizes and modification times, which refused to
  resume any run after the data was copied again (and rebuilt the dataset each time), and one of
  paths and sizes only, which a rewritten pixel would not change."""
  before = kaggle3m.fingerprint(tree)
  copy = shutil.copytree(tree, tmp_path / 'copied', copy_function=shutil.copyfile)
  assert kaggle3m.fingerprint(copy) == before
  image = kaggle3m.scan(tree)[0].image_path
  stat = image.stat()
  data = bytearray(image.read_bytes())
  data[-1] ^= 1
  image.write_bytes(bytes(data))
  os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
  assert kaggle3m.fingerprint(tree) != before
