"""The programs' persistent compilation cache: a second run of a recipe loads its compiled programs
instead of compiling them again; where the cache lives and how it is turned off."""
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from jaxbrain import cli, compilation_cache

ROOT = Path(__file__).resolve().parents[1]
TINY = ['--init', 'scratch', '--image-size', '32', '--batch-size', '4', '--epochs', '1', '--bootstrap-samples', '0',
        '--no-progress', '--evals', '--phantom-patients', '4']


def _entries(folder: Path) -> set[str]:
  return {p.relative_to(folder).as_posix() for p in folder.rglob('*') if p.is_file()}


@pytest.mark.slow
def test_a_second_run_of_a_recipe_compiles_nothing_again(tmp_path):
  """Catches programs that compile everything again on every run: no cache configured for them, or
  one whose keys change between two runs of the same recipe (the second run adds no entry)."""
  env = {k: v for k, v in os.environ.items() if not k.startswith(('JAX_COMPILATION_CACHE', 'JAXBRAIN_CACHE'))}
  env['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'  # the tiny test model compiles fast; cache all of it
  command = [sys.executable, '-m', 'experiments.exp20', '--workdir', str(tmp_path), *TINY]
  subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
  cache = tmp_path / 'xla-cache'
  first = _entries(cache)
  assert first, 'the first run cached nothing'
  subprocess.run([*command, '--overwrite'], cwd=ROOT, env=env, check=True, capture_output=True)
  assert _entries(cache) == first


def test_the_cache_folder_follows_the_environment_and_a_configured_one_wins(tmp_path, monkeypatch):
  """Catches $JAXBRAIN_CACHE ignored (or `off` not turning the cache off), training caching outside
  its workdir, and `enable` replacing a cache folder JAX was already given (the test suite's own)."""
  monkeypatch.setenv('JAXBRAIN_CACHE', str(tmp_path / 'mine'))
  assert compilation_cache.cache_dir(tmp_path / 'work') == tmp_path / 'mine'
  monkeypatch.setenv('JAXBRAIN_CACHE', 'off')
  assert compilation_cache.cache_dir(tmp_path / 'work') is None
  monkeypatch.delenv('JAXBRAIN_CACHE')
  assert compilation_cache.cache_dir(tmp_path / 'work') == tmp_path / 'work' / 'xla-cache'
  configured = jax.config.jax_compilation_cache_dir
  assert configured and compilation_cache.enable(tmp_path / 'work') == Path(configured)
  assert jax.config.jax_compilation_cache_dir == configured


def test_the_cache_command_shows_and_empties_it(tmp_path, monkeypatch, capsys):
  """Catches `jaxbrain cache --clear` leaving compiled programs behind or removing the folder itself."""
  monkeypatch.setenv('JAXBRAIN_CACHE', str(tmp_path / 'cache'))
  (tmp_path / 'cache' / 'a').mkdir(parents=True)
  (tmp_path / 'cache' / 'a' / 'program').write_bytes(b'x' * 1000)
  assert cli.main(['cache']) == 0 and 'MB of compiled programs' in capsys.readouterr().out
  assert cli.main(['cache', '--clear']) == 0
  assert (tmp_path / 'cache').is_dir() and not _entries(tmp_path / 'cache')


def test_filelock_is_a_dependency():
  """Catches the cache's lock package missing from jaxbrain's dependencies: JAX needs `filelock` once a
  cache size is capped, and without it every compiling command warns and caches nothing on a plain
  install (the test environment has it only through PyTorch)."""
  import tomllib
  declared = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']['dependencies']
  assert any(d.split('>')[0].split('=')[0].strip() == 'filelock' for d in declared)


@pytest.mark.slow
def test_the_cache_works_on_a_plain_install(installed_wheel, tmp_path):
  """Catches the cache failing on a plain install (the wheel alone, no test extras, no PyTorch), where
  a dependency it needs is missing: the compile warns "Please install the filelock package" and
  writes no entry."""
  script = ('import importlib.util, jax, jax.numpy as jnp\n'
            'from jaxbrain import compilation_cache\n'
            'assert importlib.util.find_spec("torch") is None, "not a plain install: torch is there"\n'
            'compilation_cache.enable()\n'
            'print(jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((64, 64))).sum())\n')
  env = {k: v for k, v in os.environ.items() if not k.startswith(('JAX_', 'JAXBRAIN_', 'PYTHONPATH'))}
  env.update(JAXBRAIN_CACHE=str(tmp_path / 'cache'), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')
  done = subprocess.run([installed_wheel['python'], '-c', script], env=env, cwd=tmp_path, capture_output=True,
                        text=True)
  assert done.returncode == 0, done.stderr
  assert 'warning' not in done.stderr.lower(), done.stderr
  assert _entries(tmp_path / 'cache')
