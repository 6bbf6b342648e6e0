"""JAX's persistent compilation cache for jaxbrain's programs: a second run of a recipe, a resume,
`predict`, `gate` and the Spark job's workers load their compiled XLA programs from disk instead of
compiling them again.

Where: `$JAXBRAIN_CACHE` when set (`off` turns the cache off); else `<workdir>/xla-cache` for
training (beside the runs and the built datasets), `~/.cache/jaxbrain/xla` for the commands on
trained runs. A cache folder already configured for JAX (`JAX_COMPILATION_CACHE_DIR`,
`jax.config`) wins. The folder is capped at `MAX_BYTES` (JAX evicts the least recently used
programs first); `jaxbrain cache` shows it and `jaxbrain cache --clear` empties it. As with the
XLA flags, importing jaxbrain changes nothing: the programs call `enable`.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from jaxbrain.folders import WorkDir

MAX_BYTES = 4 * 1024 ** 3  # a few hundred programs of jaxbrain's models; least recently used go first
MIN_COMPILE_SECONDS = 0.1  # programs faster to compile than this are not worth a file (JAX's default: 1 s)
OFF = 'off'


def cache_dir(workdir: str | Path | None = None) -> Path | None:
  """The folder the programs cache compiled programs in (module docstring), or None when off."""
  chosen = os.environ.get('JAXBRAIN_CACHE')
  if chosen:
    return None if chosen == OFF else Path(chosen)
  if workdir is not None:
    return WorkDir(workdir).xla_cache
  return Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache')) / 'jaxbrain' / 'xla'


def enable(workdir: str | Path | None = None) -> Path | None:
  """Turns the persistent compilation cache on for this process (before its first compilation
  counts; later ones are cached too), unless a cache folder is already configured (that one is
  kept and returned) or it is off (None)."""
  import jax

  if jax.config.jax_compilation_cache_dir:
    return Path(jax.config.jax_compilation_cache_dir)
  folder = cache_dir(workdir)
  if folder is None:
    return None
  folder.mkdir(parents=True, exist_ok=True)
  jax.config.update('jax_compilation_cache_dir', str(folder))
  if jax.config.jax_compilation_cache_max_size < 0:
    jax.config.update('jax_compilation_cache_max_size', MAX_BYTES)
  if 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS' not in os.environ:  # a setting of the user's wins
    jax.config.update('jax_persistent_cache_min_compile_time_secs', MIN_COMPILE_SECONDS)
  return folder


def size(folder: Path) -> int:
  """Bytes held in the cache folder."""
  return sum(p.stat().st_size for p in folder.rglob('*') if p.is_file()) if folder.is_dir() else 0


def clear(folder: Path) -> int:
  """Empties the cache folder; returns the bytes freed."""
  freed = size(folder)
  if folder.is_dir():
    shutil.rmtree(folder)
  folder.mkdir(parents=True, exist_ok=True)
  return freed
