"""How jaxbrain's programs fail: a user's mistake in one line (exit 2), anything else as a bug
report (exit 1, the traceback in a log file).

`UserError` marks what the user can fix (bad data, flags, run folders, output paths); its message
names the file or flag. Any other exception, a `ValueError` from inside JAX included, is a bug:
entry points (`jaxbrain`, `python -m experiments.*`, `python -m jaxbrain.spark`) print one line
with the path of a log holding the traceback, or the traceback itself with `--debug`.
"""
from __future__ import annotations

import contextlib
import errno
import os
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Callable, Iterator

# File-system failures a user fixes (permissions, a full or read-only disk, a file where a folder
# belongs): reported in one line like a UserError.
USER_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EEXIST,
               errno.ENOENT, errno.EDQUOT}


class UserError(Exception):
  """A mistake in what the user gave; the message names the file or flag and what to do."""


class ConfigError(UserError, ValueError):
  """An impossible setting (a flag's value, or a combination of flags)."""


class OutputExistsError(UserError, FileExistsError):
  """An output path that already holds something jaxbrain will not overwrite."""


class OutputError(UserError, OSError):
  """An output folder that cannot be used: inside the inputs, or not writable."""


class Caution(UserWarning):
  """A warning of jaxbrain's about the user's inputs, runs or outputs (a slice gap, a phantom-trained
  run, a skipped output): what a prediction's page repeats. Warnings of the libraries underneath
  (JAX's, say) print on the console but are not the user's to act on, so no page shows them."""


def write_log(text: str, folder: str | Path | None) -> Path:
  """Writes `text` to a new `jaxbrain-error-<time>.log` in `folder` (if writable), else in the
  system's temporary folder; returns its path."""
  name = f'jaxbrain-error-{time.strftime("%Y%m%d-%H%M%S")}-{os.getpid()}.log'
  for candidate in ([Path(folder)] if folder else []) + [Path(tempfile.gettempdir())]:
    try:
      candidate.mkdir(parents=True, exist_ok=True)
      path = candidate / name
      path.write_text(text, encoding='utf-8')
      return path
    except OSError:
      continue
  raise OSError('no writable folder for the error log')


def run_entry_point(program: str, body: Callable[[], int], debug: bool = False,
                    log_folder: Callable[[], str | Path | None] = lambda: None) -> int:
  """Runs `body` and turns its failure into an exit code: 2 for a UserError or a file-system
  mistake (one line), 1 for anything else (one line and the log's path; the traceback with `debug`).
  Warnings print as one line each: `<program>: warning: <message>`."""
  warnings.formatwarning = lambda message, *_, **__: f'{program}: warning: {message}\n'
  try:
    return body()
  except UserError as e:
    print(f'{program}: error: {e}', file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print(f'{program}: interrupted', file=sys.stderr)
    return 130
  except OSError as e:
    if e.errno not in USER_ERRNOS:
      return _bug(program, debug, log_folder)
    print(f'{program}: error: {e.strerror}: {e.filename or e}', file=sys.stderr)
    return 2
  except Exception:  # noqa: BLE001 -- the catch-all of a program's entry point
    return _bug(program, debug, log_folder)


def _bug(program: str, debug: bool, log_folder: Callable[[], str | Path | None]) -> int:
  text = traceback.format_exc()
  if debug:
    print(text, file=sys.stderr, end='')
    return 1
  last = text.strip().splitlines()[-1]
  try:
    folder = log_folder()
  except Exception:  # noqa: BLE001 -- the log must be written whatever failed
    folder = None
  path = write_log(text, folder)
  print(f'{program}: unexpected error: {last}\n{program}: the traceback is in {path} (--debug prints it); '
        'please report it', file=sys.stderr)
  return 1


@contextlib.contextmanager
def warnings_kept() -> Iterator[list[str]]:
  """Shows every warning raised inside as it would be shown anyway, and keeps the message of each
  `Caution` in the list it yields, so that an output (a prediction's page) can repeat what the
  console said to the user; other libraries' warnings are shown only."""
  kept = []
  with warnings.catch_warnings():
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
      if issubclass(category, Caution):
        kept.append(str(message))
      shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    yield kept
