"""Writing outputs (`jaxbrain.files`): folders appear whole, with ordinary permissions."""
import os

import pytest

from jaxbrain.files import staged_folder


def test_a_staged_folder_appears_whole_with_a_plain_folders_permissions(tmp_path):
  """Catches the folder left owner-only as mkdtemp makes it (a bundle exported on a shared machine
  that the other users cannot read), and a staging name left behind."""
  plain = tmp_path / 'plain'
  plain.mkdir()
  with staged_folder(tmp_path / 'out') as staging:
    (staging / 'file').write_text('x')
  assert (tmp_path / 'out' / 'file').read_text() == 'x'
  assert os.stat(tmp_path / 'out').st_mode == os.stat(plain).st_mode
  assert sorted(p.name for p in tmp_path.iterdir()) == ['out', 'plain']


def test_a_failed_block_leaves_nothing(tmp_path):
  """Catches a half-filled folder left under the staging name or the final one."""
  with pytest.raises(RuntimeError), staged_folder(tmp_path / 'out') as staging:
    (staging / 'file').write_text('x')
    raise RuntimeError('interrupted')
  assert list(tmp_path.iterdir()) == []
