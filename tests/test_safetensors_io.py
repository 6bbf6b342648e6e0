"""jaxbrain's own safetensors reader and writer agree with the `safetensors` package both ways."""
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from jaxbrain import safetensors_io


def _tensors():
  rng = np.random.default_rng(0)
  return {'params/conv/kernel': rng.normal(size=(3, 3, 2, 4)).astype(np.float32),
          'params/conv/bias': np.arange(4, dtype=np.float16), 'batch_stats/bn/mean': np.zeros((0,), np.float32),
          'steps': np.array([7], np.int64), 'mask': np.array([True, False])}


def test_files_written_here_read_with_the_safetensors_package_and_back(tmp_path):
  """Catches a header the package rejects (offsets, dtype codes, alignment), bytes in the wrong
  order, or a round trip that changes a value, a dtype or a shape (empty tensors too)."""
  tensors = _tensors()
  safetensors_io.write(tmp_path / 'a.safetensors', tensors, {'name': 'x'})
  theirs = load_file(tmp_path / 'a.safetensors')
  ours, metadata = safetensors_io.read(tmp_path / 'a.safetensors')
  assert metadata == {'name': 'x'}
  for name, value in tensors.items():
    for read in (theirs[name], ours[name]):
      assert read.dtype == value.dtype and read.shape == value.shape
      np.testing.assert_array_equal(read, value)


def test_files_written_by_the_safetensors_package_read_here(tmp_path):
  """Catches a reader that only reads its own writer's layout (the package orders and pads otherwise)."""
  tensors = _tensors()
  save_file(tensors, tmp_path / 'b.safetensors')
  ours, _ = safetensors_io.read(tmp_path / 'b.safetensors')
  assert set(ours) == set(tensors)
  for name, value in tensors.items():
    np.testing.assert_array_equal(ours[name], value)


def test_the_same_tensors_give_the_same_bytes(tmp_path):
  """Catches a writer whose bytes depend on the dict's order (a bundle's checksums would then change
  on every export of the same weights)."""
  tensors = _tensors()
  safetensors_io.write(tmp_path / 'a', tensors)
  safetensors_io.write(tmp_path / 'b', dict(reversed(list(tensors.items()))))
  assert (tmp_path / 'a').read_bytes() == (tmp_path / 'b').read_bytes()


def test_nested_variables_flatten_and_come_back():
  """Catches flatten / unflatten losing a level or a leaf."""
  tree = {'params': {'a': {'kernel': np.ones(2)}, 'b': np.zeros(1)}, 'batch_stats': {'a': {'mean': np.ones(3)}}}
  flat = safetensors_io.flatten(tree)
  assert set(flat) == {'params/a/kernel', 'params/b', 'batch_stats/a/mean'}
  back = safetensors_io.unflatten(flat)
  assert back.keys() == tree.keys() and back['params']['a']['kernel'] is tree['params']['a']['kernel']


@pytest.mark.parametrize('damage', ['truncated', 'header', 'length'])
def test_a_damaged_file_is_refused_naming_it(tmp_path, damage):
  """Catches a damaged file read as garbage weights (or a crash without the file's name)."""
  path = tmp_path / 'w.safetensors'
  safetensors_io.write(path, _tensors())
  raw = path.read_bytes()
  raw = {'truncated': raw[:-5], 'header': raw[:8] + b'x' + raw[9:], 'length': (10 ** 12).to_bytes(8, 'little') + raw[8:]}[damage]
  path.write_bytes(raw)
  with pytest.raises(safetensors_io.SafetensorsError, match=str(path)):
    safetensors_io.read(path)
