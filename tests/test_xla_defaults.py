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


def test_import_changes_nothing_and_entry_points_configure():
  """Catches `import jaxbrain` setting XLA_FLAGS (a side effect on every importer); the CLI's entry
  point and `jaxbrain.configure_cpu()` do set them, and JAX then runs with them."""
  environment = {'PATH': '', 'HOME': '/tmp', 'XLA_FLAGS': '--xla_dump_to=/nonexistent-never-used'}
  code = 'import os, jaxbrain, jaxbrain.train, jaxbrain.localize.predict; print(os.environ["XLA_FLAGS"])'
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True, env=environment)
  assert out.stdout.strip() == '--xla_dump_to=/nonexistent-never-used'
  code = ('import os, jaxbrain, jax.numpy as jnp; jaxbrain.configure_cpu(); print(os.environ["XLA_FLAGS"]); '
          'print(float(jnp.ones(3).sum()))')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True,
                       env={'PATH': '', 'HOME': '/tmp'}).stdout.split('\n')
  assert out[0] == ' '.join(xla_defaults.CPU_FLAGS) and out[1] == '3.0'
  code = ('import os, sys; from jaxbrain import cli; cli.main(["data", "/nonexistent"]); '
          'print(os.environ["XLA_FLAGS"])')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env={'PATH': '', 'HOME': '/tmp'})
  assert out.stdout.strip() == ' '.join(xla_defaults.CPU_FLAGS)
