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


def test_help_and_a_mistyped_flag_answer_without_loading_jax():
  """Catches `jaxbrain --help` or `jaxbrain predict --help` importing JAX (seconds before a line of
  help) and a mistyped flag reported as another flag's absence ("the following arguments are
  required: --out") instead of by its name with the nearest real one."""
  import subprocess
  import sys
  probe = ('import sys\nfrom jaxbrain import cli\n'
           'for argv in (["--help"], ["predict", "--help"], ["gate", "--help"], ["predict", "x", "--ouput", "p"]):\n'
           '  try:\n    cli.main(argv)\n  except SystemExit:\n    pass\n'
           'print("JAX LOADED" if "jax" in sys.modules else "no jax", file=sys.stderr)\n')
  done = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True)
  assert done.stderr.strip().splitlines()[-1] == 'no jax', done.stderr
  assert 'unrecognized flag --ouput; did you mean --out?' in done.stderr
  assert 'the following arguments are required' not in done.stderr
  assert 'detect, then localize' in done.stdout  # the gate's help, read from its module's docstring


def test_counts_are_worded_for_one(tmp_path, capsys):
  """Catches "1 patients" and a doubled slash in a printed path (`wrote pred//report.html`)."""
  from jaxbrain.text import counted
  assert (counted(1, 'patient'), counted(2, 'patient'), counted(0, 'slice')) == ('1 patient', '2 patients', '0 slices')
  assert cli.main(['phantom', str(tmp_path / 'ph'), '--patients', '1', '--format', 'png']) == 0
  assert cli.main(['data', str(tmp_path / 'ph')]) == 0
  assert '1 patient,' in capsys.readouterr().out


def test_experiment_help_states_switch_defaults_in_words():
  """Catches `--no-mask-head ... (default: True)` (the flag turns it off: True says the opposite)
  and `--run-name ... (default: from split ...) (default: None)`."""
  from experiments.common import build_parser
  from experiments.configs import EXPERIMENTS
  text = ' '.join(build_parser(EXPERIMENTS['exp21']).format_help().split())
  assert '(on by default; this flag turns it off)' in text and 'default: True' not in text
  assert 'default: None' not in text
