"""tcmalloc for jaxbrain's programs: XLA:CPU frees and re-allocates its temporary buffers on every
step, and glibc's malloc returns those large blocks to the kernel each time, so every training step
page-faults its activations in again. A caching allocator keeps them (measured: docs/performance.md).

The allocator has to be chosen before the process starts (LD_PRELOAD), so jaxbrain's own entry
points (`jaxbrain ...`, `python -m experiments.<name>`, `bench/run.py`) restart themselves once
with it preloaded, when it is installed (Debian/Ubuntu: `apt install libtcmalloc-minimal4`) and
not already loaded. `JAXBRAIN_ALLOCATOR=system` keeps glibc's. Library code (`import jaxbrain`)
never restarts anything: for research scripts, set LD_PRELOAD yourself (`tcmalloc_path()`). The
restart costs one more interpreter start and import.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Sequence

LIBRARY_NAMES = ('libtcmalloc_minimal.so.4', 'libtcmalloc.so.4')
LIBRARY_DIRS = ('/usr/lib/x86_64-linux-gnu', '/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu',
                '/lib/aarch64-linux-gnu', '/usr/lib64', '/usr/lib', '/usr/local/lib')
_RESTARTED = '_JAXBRAIN_ALLOCATOR_RESTARTED'


def tcmalloc_path(directories: Sequence[str] | None = None) -> str | None:
  """The first tcmalloc shared library found in `directories` (default `LIBRARY_DIRS`), or None."""
  for directory in directories or LIBRARY_DIRS:
    for name in LIBRARY_NAMES:
      candidate = Path(directory) / name
      if candidate.is_file():
        return str(candidate)
  return None


def tcmalloc_loaded() -> bool:
  """Whether this process already runs with tcmalloc mapped (preloaded or linked)."""
  try:
    return 'tcmalloc' in Path('/proc/self/maps').read_text()
  except OSError:
    return False


def _tcmalloc_wanted() -> bool:
  """On Linux, unless JAXBRAIN_ALLOCATOR=system chose glibc's malloc."""
  return os.environ.get('JAXBRAIN_ALLOCATOR', 'tcmalloc') != 'system' and sys.platform.startswith('linux')


def restart_with_tcmalloc(directories: Sequence[str] | None = None) -> None:
  """Re-executes this program (same interpreter, arguments and environment) with tcmalloc preloaded.

  Returns without doing anything when JAXBRAIN_ALLOCATOR=system, off Linux, when tcmalloc is not
  installed or already loaded, or when this process is itself the restart. Call it first thing in a
  program's entry point, before threads or files are opened.
  """
  if not _tcmalloc_wanted() or os.environ.get(_RESTARTED) or tcmalloc_loaded():
    return
  library = tcmalloc_path(directories)
  if library is None:
    return
  preload = ' '.join(filter(None, [library, os.environ.get('LD_PRELOAD', '')]))
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], {**os.environ, 'LD_PRELOAD': preload, _RESTARTED: '1'})


def missing_tcmalloc_notice(directories: Sequence[str] | None = None) -> str | None:
  """The line a training program prints when it runs on glibc's malloc only because tcmalloc is not
  installed: on Linux, with no JAXBRAIN_ALLOCATOR=system, neither loaded nor found in `directories`.

  None otherwise. The slowdown is silent without it (XLA:CPU steps page-fault their buffers in)."""
  if not _tcmalloc_wanted() or tcmalloc_loaded() or tcmalloc_path(directories) is not None:
    return None
  return ('note: tcmalloc is not installed, so training on the CPU runs with glibc\'s malloc, much slower '
          '(apt install libtcmalloc-minimal4; docs/performance.md); JAXBRAIN_ALLOCATOR=system hides this note')
