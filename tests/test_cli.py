import json

from jaxbrain import cli


def test_data_json(phantom_tif, capsys):
  assert cli.main(['data', str(phantom_tif), '--json']) == 0
  summary = json.loads(capsys.readouterr().out)
  assert summary['patients'] == 6 and summary['slices'] > summary['tumor_slices'] > 0


def test_data_text(phantom_tif, capsys):
  assert cli.main(['data', str(phantom_tif)]) == 0
  out = capsys.readouterr().out
  assert '6 patients' in out and 'institution PH' in out


def test_bad_input_exits_nonzero_with_the_error(tmp_path, capsys):
  (tmp_path / 'empty').mkdir()
  assert cli.main(['data', str(tmp_path / 'empty')]) == 2
  assert 'folder is empty' in capsys.readouterr().err


def test_phantom_command(tmp_path, capsys):
  assert cli.main(['phantom', str(tmp_path / 'ph'), '--patients', '2', '--format', 'png']) == 0
  assert cli.main(['data', str(tmp_path / 'ph'), '--json']) == 0
  assert json.loads(capsys.readouterr().out.splitlines()[-1])['patients'] == 2
