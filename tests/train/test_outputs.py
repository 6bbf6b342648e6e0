"""The run's TensorBoard writer: what it costs a run's start."""
import subprocess
import sys

import pytest


def test_the_tensorboard_writer_does_not_import_pytorch(tmp_path):
  """In a fresh process with PyTorch installed, opening a run's writer and logging a scalar and an
  image leaves torch unimported, and torch still imports afterwards. Catches tensorboardX imported
  plainly (it imports torch whenever it can: most of a warm run's time to its first step) and a
  blocked import left behind."""
  pytest.importorskip('torch')
  code = ('import sys, numpy as np\n'
          'from jaxbrain.train.outputs import RunWriter\n'
          f'writer = RunWriter({str(tmp_path / "run")!r})\n'
          'writer.steps([1], [0.5], [0.1])\n'
          'writer.images("eval/overlays", np.zeros((1, 8, 8, 3), np.uint8), 1)\n'
          'writer.tensorboard.flush()\n'
          'print("torch" in sys.modules)\n'
          'import torch\n'
          'print(torch.zeros(1).shape[0])\n')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout.split()
  assert out == ['False', '1']
  assert list((tmp_path / 'run' / 'tensorboard').glob('events.out.tfevents.*'))
