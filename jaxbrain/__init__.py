"""jaxbrain: brain-tumor detection and localization in MRI slices, in pure JAX."""
from jaxbrain import xla_defaults as _xla_defaults

_xla_defaults.apply()  # before JAX creates its CPU client; see jaxbrain/xla_defaults.py

__version__ = '0.1.0'
