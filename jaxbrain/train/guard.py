"""The run folder's guard: what is refused before any work (a run that would resume nothing, replace a
run without --overwrite, or resume with another config or data), the lock held while a process
writes the run, and the record of a resume that raised --epochs."""
from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import time

from jaxbrain.config import Config
from jaxbrain.errors import ConfigError, UserError
from jaxbrain.folders import RunDir
from jaxbrain.runs import read_config


class RunExistsError(UserError, FileExistsError):
  """The run directory already holds a run; resume it or overwrite it explicitly."""


def check_run_dir(run: RunDir, resume: bool, overwrite: bool) -> None:
  """Refuses, before any work, a run that would resume nothing or replace a run without --overwrite."""
  if resume and not run.config.is_file():
    raise UserError(f'{run}: there is no run to resume there; drop --resume to start it')
  if run.path.exists() and any(run.path.iterdir()) and not resume and not overwrite:
    raise RunExistsError(f'{run} already holds a run: pass --resume to continue it, --overwrite to '
                         'start it over, or --run-name NAME for a new one')


def prepare_run_dir(run: RunDir, resume: bool) -> None:
  """The run directory, emptied first unless resuming (what --overwrite asked for)."""
  if run.path.exists() and any(run.path.iterdir()) and not resume:
    shutil.rmtree(run.path)
  run.path.mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def run_lock(run: RunDir, take: bool):
  """Holds an exclusive lock (`RunDir.lock`) while a run writes its directory (process 0 only), so a
  second run of the same name fails cleanly instead of mixing its files into the first's."""
  if not take:
    yield
    return
  run.lock.parent.mkdir(parents=True, exist_ok=True)
  with open(run.lock, 'a') as handle:
    try:
      fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise UserError(f'{run}: another process is running this run now; wait for it to finish, or give '
                      '--run-name NAME for a new run') from None
    try:
      yield
    finally:
      fcntl.flock(handle, fcntl.LOCK_UN)


# More epochs (recorded in resumes.jsonl); the data (compared by content); what is kept on disk and how often.
RESUMABLE_CHANGES = ('epochs', 'data_dir', 'keep_checkpoints', 'checkpoint_every_s')


def check_resume(run: RunDir, config: Config, content: str) -> dict | None:
  """Refuses to resume `run` with another config than the one it started with (listing every
  field that differs) or on changed data. Returns the record of an epoch extension (`--epochs`
  raised), else None. The stored config.json is never rewritten."""
  try:
    stored_config, header = read_config(run.path)
  except UserError as e:
    raise UserError(f'{e}; this run cannot be resumed') from None
  stored, current = stored_config.flat(), config.flat()
  changed = [f'{name} {stored.get(name)!r} -> {value!r}' for name, value in current.items()
             if name not in RESUMABLE_CHANGES and stored.get(name, value) != value]
  if config.epochs < stored['epochs']:
    changed.append(f'epochs {stored["epochs"]} -> {config.epochs} (only raising --epochs is allowed)')
  if changed:
    raise ConfigError(f'{run}: --resume with a changed config ({"; ".join(changed)}); resume with the run\'s '
                      'own settings, or start a new run with --run-name NAME')
  if header.get('data_fingerprint', content) != content:
    raise UserError(f'{run}: the data changed since this run started (fingerprint {header["data_fingerprint"]} '
                    f'-> {content}); a resumed run would mix two datasets: start a new run')
  if config.epochs > stored['epochs']:
    return {'time': time.strftime('%Y-%m-%dT%H:%M:%S'), 'epochs': [stored['epochs'], config.epochs]}
  return None


def record_extension(run: RunDir, extension: dict) -> None:
  """Appends an epoch extension (`check_resume`'s record) to resumes.jsonl."""
  with open(run.resumes, 'a') as f:
    f.write(json.dumps(extension) + '\n')
