import subprocess
import sys

from jaxbrain import xla_defaults


def test_adds_missing_flags_and_respects_the_user(monkeypatch):
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=2')
  assert xla_defaults.apply() == list(xla_defaults.CPU_FLAGS)
  import os
  assert os.environ['XLA_FLAGS'].split() == ['--xla_force_host_platform_device_count=2', *xla_defaults.CPU_FLAGS]
  assert xla_defaults.apply() == []  # idempotent
  name = xla_defaults.CPU_FLAGS[0].split('=')[0]
  monkeypatch.setenv('XLA_FLAGS', f'{name}=')
  assert xla_defaults.apply() == [] and os.environ['XLA_FLAGS'] == f'{name}='
  monkeypatch.setenv('JAXBRAIN_XLA_DEFAULTS', '0')
  monkeypatch.setenv('XLA_FLAGS', '')
  assert xla_defaults.apply() == [] and os.environ['XLA_FLAGS'] == ''


def test_jax_runs_with_the_defaults():
  code = 'import jaxbrain, jax, jax.numpy as jnp, os; print(os.environ["XLA_FLAGS"]); print(float(jnp.ones(3).sum()))'
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True,
                       env={'PATH': '', 'HOME': '/tmp'}).stdout.split('\n')
  assert out[0] == ' '.join(xla_defaults.CPU_FLAGS) and out[1] == '3.0'
