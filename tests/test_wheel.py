"""The wheel as a user installs it: built with `python -m build`, installed in a fresh virtualenv
outside the checkout (not `-e`; the `installed_wheel` fixture), the demo trained and `jaxbrain
predict` run on its output."""
import json
import os
import zipfile

import pytest

import jaxbrain
from tests.commands import succeeds

DEMO = ['--epochs', '1', '--image-size', '32', '--batch-size', '4', '--bootstrap-samples', '0', '--no-progress',
        '--evals']


@pytest.mark.slow
def test_the_wheel_installs_and_runs_outside_the_checkout(installed_wheel, tmp_path):
  """Catches a wheel that lacks a module or file the programs need (a package left out of
  `packages.find`, an untracked file that only the working copy has), entry points that do not install, a version
  stated twice that disagrees, `experiments` resolving to anything but the installed package, and a
  bundle's weights packed into the wheel."""
  wheel, python = installed_wheel['wheel'], installed_wheel['python']
  assert wheel.name.startswith(f'jaxbrain-{jaxbrain.__version__}-')
  with zipfile.ZipFile(wheel) as archive:  # the weights of a bundle stay out of the wheel
    assert not [n for n in archive.namelist() if n.endswith('.safetensors') or n.startswith('checkpoints/')]
  away = tmp_path / 'elsewhere'  # no checkout on sys.path: the current folder is empty
  away.mkdir()
  env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV')}
  where = json.loads(succeeds([python, '-c', 'import json, importlib.metadata as m, jaxbrain, experiments.exp20 as e; '
                                         'print(json.dumps([m.version("jaxbrain"), jaxbrain.__version__, e.__file__]))'],
                          away, env))
  assert where[0] == where[1] == jaxbrain.__version__
  assert str(python.parents[1]) in where[2]
  succeeds([python, '-m', 'experiments.exp20', '--workdir', str(away / 'checkpoints'), *DEMO], away, env)
  run, = (away / 'checkpoints' / 'exp20').iterdir()
  phantom, = (away / 'checkpoints' / 'phantom').glob('*/kaggle_3m')
  patient = sorted(p for p in phantom.iterdir() if p.is_dir())[0]
  succeeds([python.parent / 'jaxbrain', 'predict', str(patient), '--run', str(run), '--out', str(away / 'pred'),
        '--no-progress'], away, env)
  assert (away / 'pred' / 'predictions.csv').is_file() and (away / 'pred' / 'report.html').is_file()
