"""jaxbrain: brain-tumor detection and localization in MRI slices, in pure JAX."""
__version__ = '0.1.0'
