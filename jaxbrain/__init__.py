"""jaxbrain: brain-tumor detection and localization in MRI slices, in pure JAX.

Importing jaxbrain changes nothing in the process. Its programs (`jaxbrain`, `python -m
experiments.*`, `bench/`, the Spark job's workers) tune the CPU themselves; research code calls
`jaxbrain.configure_cpu()` before its first JAX computation to get the same XLA settings.
"""
from jaxbrain import xla_defaults as _xla_defaults

__version__ = '0.1.0'


def configure_cpu() -> list[str]:
  """Applies jaxbrain's XLA:CPU defaults (docs/performance.md) to this process's XLA_FLAGS, unless
  JAXBRAIN_XLA_DEFAULTS=0; a flag already set wins. Call it before JAX runs its first computation
  (XLA reads the flags when it creates its CPU client). Returns the flags it added. tcmalloc needs
  a preload instead: `LD_PRELOAD=$(python -c "from jaxbrain.allocator import tcmalloc_path; print(tcmalloc_path())")`.
  """
  return _xla_defaults.apply()
