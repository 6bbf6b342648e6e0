"""The data-parallel step on 8 (emulated CPU) devices equals the 1-device step."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def run_on(devices: int, out: Path) -> dict:
  env = {**os.environ, 'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices}', 'JAX_PLATFORMS': 'cpu'}
  subprocess.run([sys.executable, '-m', 'tests.train.sharded_steps', str(out)], cwd=ROOT, env=env, check=True)
  return dict(np.load(out))


def test_eight_devices_match_one(tmp_path):
  one = run_on(1, tmp_path / 'one.npz')
  eight = run_on(8, tmp_path / 'eight.npz')
  assert int(one.pop('devices')) == 1 and int(eight.pop('devices')) == 8
  np.testing.assert_allclose(eight.pop('losses'), one.pop('losses'), rtol=1e-5)
  assert one.keys() == eight.keys() and len(one) > 100
  for name in one:
    np.testing.assert_allclose(eight[name], one[name], rtol=1e-4, atol=1e-5, err_msg=name)
