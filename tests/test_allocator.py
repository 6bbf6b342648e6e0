"""jaxbrain's programs restart once with tcmalloc preloaded; library imports never restart."""
import os
import subprocess
import sys

import pytest

from jaxbrain import allocator


class Restarted(Exception):
  pass


@pytest.fixture
def fake_execve(monkeypatch):
  calls = []

  def execve(path, argv, env):
    calls.append((path, argv, env))
    raise Restarted

  monkeypatch.setattr(os, 'execve', execve)
  monkeypatch.delenv('JAXBRAIN_ALLOCATOR', raising=False)
  monkeypatch.delenv(allocator._RESTARTED, raising=False)
  monkeypatch.setattr(allocator, 'tcmalloc_loaded', lambda: False)
  return calls


@pytest.fixture
def fake_library(tmp_path):
  (tmp_path / 'libtcmalloc_minimal.so.4').write_bytes(b'')
  return tmp_path


def test_tcmalloc_path_finds_the_library_or_none(tmp_path, fake_library):
  assert allocator.tcmalloc_path([tmp_path / 'nowhere']) is None
  assert allocator.tcmalloc_path([tmp_path / 'nowhere', fake_library]) == str(fake_library / 'libtcmalloc_minimal.so.4')


def test_restart_preloads_tcmalloc_with_the_same_command_line(fake_execve, fake_library, monkeypatch):
  monkeypatch.setenv('LD_PRELOAD', '/opt/other.so')
  with pytest.raises(Restarted):
    allocator.restart_with_tcmalloc([fake_library])
  (path, argv, env), = fake_execve
  assert path == sys.executable and argv == [sys.executable, *sys.orig_argv[1:]]
  assert env['LD_PRELOAD'] == f"{fake_library / 'libtcmalloc_minimal.so.4'} /opt/other.so"
  assert env[allocator._RESTARTED] == '1'


@pytest.mark.parametrize('setting', ['opt-out', 'not installed', 'already restarted'])
def test_no_restart(setting, fake_execve, fake_library, tmp_path, monkeypatch):
  directories = [fake_library]
  if setting == 'opt-out':
    monkeypatch.setenv('JAXBRAIN_ALLOCATOR', 'system')
  elif setting == 'not installed':
    directories = [tmp_path / 'nowhere']
  else:
    monkeypatch.setenv(allocator._RESTARTED, '1')
  allocator.restart_with_tcmalloc(directories)
  assert fake_execve == []


def test_the_programs_restart_when_run_from_the_command_line(fake_execve, fake_library, monkeypatch):
  from experiments import common, exp20
  from jaxbrain import cli
  monkeypatch.setattr(allocator, 'LIBRARY_DIRS', (str(fake_library),))
  with pytest.raises(Restarted):
    cli.main()
  with pytest.raises(Restarted):
    common.main(exp20.CONFIG)
  assert len(fake_execve) == 2



@pytest.mark.parametrize('setting,expected', [('not installed', True), ('installed', False), ('loaded', False),
                                              ('opt-out', False)])
def test_the_missing_tcmalloc_notice_shows_only_when_it_is_not_installed(setting, expected, fake_execve, fake_library,
                                                                          tmp_path, monkeypatch):
  """Catches a notice that never shows (a user training on glibc's malloc, much slower, without
  knowing why) and one that nags when tcmalloc is found, already loaded, or glibc was chosen."""
  directories = [tmp_path / 'nowhere'] if setting == 'not installed' else [fake_library]
  if setting == 'loaded':
    directories = [tmp_path / 'nowhere']
    monkeypatch.setattr(allocator, 'tcmalloc_loaded', lambda: True)
  if setting == 'opt-out':
    directories = [tmp_path / 'nowhere']
    monkeypatch.setenv('JAXBRAIN_ALLOCATOR', 'system')
  notice = allocator.missing_tcmalloc_notice(directories)
  assert (notice is not None) == expected
  if expected:
    assert 'apt install libtcmalloc-minimal4' in notice and '\n' not in notice


def test_an_experiment_run_from_the_command_line_prints_the_notice(fake_execve, tmp_path, monkeypatch, capsys):
  """Catches the runner not printing the notice (the function alone is not enough: nobody would see it)."""
  from experiments import common, exp20
  monkeypatch.setattr(allocator, 'LIBRARY_DIRS', (str(tmp_path / 'nowhere'),))

  def run_entry_point(*args, **kwargs):
    raise Restarted  # stands for "the run would start here"

  monkeypatch.setattr(common, 'run_entry_point', run_entry_point)
  with pytest.raises(Restarted):
    common.main(exp20.CONFIG)
  assert 'tcmalloc is not installed' in capsys.readouterr().err

def test_cli_called_from_code_never_restarts(fake_execve, fake_library, monkeypatch, tmp_path):
  from jaxbrain import cli
  monkeypatch.setattr(allocator, 'LIBRARY_DIRS', (str(fake_library),))
  assert cli.main(['phantom', str(tmp_path / 'ph'), '--patients', '1', '--format', 'png']) == 0
  assert fake_execve == []


@pytest.mark.skipif(allocator.tcmalloc_path() is None, reason='tcmalloc is not installed (apt install libtcmalloc-minimal4)')
@pytest.mark.parametrize('choice,loaded', [(None, True), ('system', False)])
def test_a_real_restart_runs_with_tcmalloc_and_keeps_the_arguments(choice, loaded):
  code = ('import sys; from jaxbrain import allocator; allocator.restart_with_tcmalloc(); '
          'print(allocator.tcmalloc_loaded(), sys.argv[1:])')
  env = {k: v for k, v in os.environ.items() if k not in ('JAXBRAIN_ALLOCATOR', allocator._RESTARTED)}
  if choice:
    env['JAXBRAIN_ALLOCATOR'] = choice
  out = subprocess.run([sys.executable, '-c', code, 'a', '--b'], capture_output=True, text=True, env=env, check=True)
  assert out.stdout.strip() == f"{loaded} ['a', '--b']"
