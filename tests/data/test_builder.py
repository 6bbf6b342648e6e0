"""The TFDS builder: same pixels as direct decoding, both formats, no leftovers on failure."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import jaxbrain.data
from jaxbrain.data import DataError, build_dataset, kaggle3m, load_arrays, load_dataset


@pytest.mark.parametrize('fixture', ['phantom_tif', 'phantom_png'])
def test_builds_every_slice_with_its_mask(request, tmp_path, fixture):
  root = request.getfixturevalue(fixture)
  data = load_dataset(root, tmp_path / 'tfds')
  records = kaggle3m.scan(root)
  assert len(data) == len(records)
  assert [(p, s) for p, s in zip(data.patient, data.slice)] == [(r.patient, r.slice) for r in records]
  for i in (0, len(records) // 2, len(records) - 1):
    image, mask = kaggle3m.read_slice(records[i])
    np.testing.assert_array_equal(data.image[i], image)
    np.testing.assert_array_equal(data.mask[i], mask)
    assert data.label[i] == mask.any()
    assert data.institution[i] == records[i].institution
  assert data.image.dtype == np.uint8 and data.image.shape[1:] == (256, 256, 3)


def test_second_call_reuses_the_built_dataset(phantom_png, tmp_path):
  builder = build_dataset(phantom_png, tmp_path / 'tfds')
  stamp = sorted(p.stat().st_mtime_ns for p in (tmp_path / 'tfds').rglob('*') if p.is_file())
  again = build_dataset(phantom_png, tmp_path / 'tfds')
  assert sorted(p.stat().st_mtime_ns for p in (tmp_path / 'tfds').rglob('*') if p.is_file()) == stamp
  assert len(load_arrays(again)) == len(load_arrays(builder))


def test_a_build_leaves_nothing_in_the_temporary_folder(phantom_png, tmp_path, monkeypatch):
  """Catches TFDS's empty `tmp*tfds` folder (made while it looks for metadata on GCS) left in the
  system's temporary folder by every new build."""
  import tempfile
  scratch = tmp_path / 'system-tmp'
  scratch.mkdir()
  monkeypatch.setattr(tempfile, 'tempdir', str(scratch))
  build_dataset(phantom_png, tmp_path / 'tfds')
  assert list(scratch.iterdir()) == []
  assert tempfile.gettempdir() == str(scratch)


def test_failed_build_leaves_nothing(phantom_png, tmp_path):
  tree = shutil.copytree(phantom_png, tmp_path / 'kaggle_3m')
  victim = kaggle3m.scan(tree)[-1].image_path
  victim.write_bytes(victim.read_bytes()[:500])
  with pytest.raises(DataError, match=victim.name):
    build_dataset(tree, tmp_path / 'tfds')
  leftovers = [p for p in (tmp_path / 'tfds').rglob('*') if p.is_file()] if (tmp_path / 'tfds').exists() else []
  assert leftovers == []


@pytest.mark.realdata
def test_cli_reports_the_shared_lgg_copy(real_data):
  out = subprocess.run([sys.executable, '-m', 'jaxbrain.cli', 'data', str(real_data), '--json'],
                       capture_output=True, text=True, check=True).stdout
  summary = json.loads(out)
  assert (summary['patients'], summary['slices'], summary['tumor_slices']) == (80, 2855, 994)


@pytest.mark.realdata
@pytest.mark.slow
def test_builds_the_shared_lgg_copy(real_data, tmp_path):
  data = load_dataset(real_data, tmp_path / 'tfds')
  assert (len(set(data.patient)), len(data), int(data.label.sum())) == (80, 2855, 994)
  assert data.mask.max() == 1 and np.array_equal(data.label, data.mask.reshape(len(data), -1).any(1))


def test_tfds_loads_only_when_the_builder_is_used():
  code = ('import sys, jaxbrain.train, jaxbrain.cli, jaxbrain.localize\n'
          'assert "tensorflow_datasets" not in sys.modules, "imported eagerly"\n'
          'import jaxbrain.data, jaxbrain.data.builder as builder\n'
          'assert jaxbrain.data.load_dataset is builder.load_dataset and jaxbrain.data.Lgg is builder.Lgg\n'
          'assert "tensorflow_datasets" in sys.modules\n')
  subprocess.run([sys.executable, '-c', code], check=True, env={**os.environ, 'JAXBRAIN_ALLOCATOR': 'system'})
  with pytest.raises(AttributeError, match='no_such_thing'):
    jaxbrain.data.no_such_thing


def test_a_build_without_progress_prints_no_tfds_bars(phantom_png, tmp_path, capfd):
  """Catches `--no-progress` runs that still print TFDS's "Generating ... examples" and "Shuffling"
  bars while the dataset is built, TFDS's "Downloading and preparing dataset Unknown size" lines
  (nothing is downloaded), and TFDS's switch left off for the rest of the process."""
  from tensorflow_datasets.core.utils import tqdm_utils
  build_dataset(phantom_png, tmp_path / 'shown')
  shown = capfd.readouterr()
  assert 'Generating' in shown.err + shown.out  # the bars this test looks for do exist
  build_dataset(phantom_png, tmp_path / 'quiet', progress=False)
  quiet = capfd.readouterr()
  assert quiet.err + quiet.out == ''
  assert 'Downloading' not in shown.err + shown.out
  assert tqdm_utils._active  # pylint: disable=protected-access
