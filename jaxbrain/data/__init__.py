"""LGG data: kaggle_3m scanning and validation, TFDS builder, splits, transforms, batches, phantoms.

The TFDS builder (and with it tensorflow_datasets, slow to import) loads on first use of
`Lgg`, `build_dataset`, `load_arrays` or `load_dataset`, so training steps and models import
without it.
"""
import importlib

from jaxbrain.data.arrays import SliceArrays
from jaxbrain.data.batching import check_batch_size, eval_batches, train_batches
from jaxbrain.data.kaggle3m import DataError, SliceRecord, fingerprint, read_slice, scan, summarize
from jaxbrain.data.phantom import write_phantom
from jaxbrain.data.splits import (Split, check_disjoint, make_split, patient_folds, patient_kfold, patient_split,
                                  slice_split, split_record)
from jaxbrain.data.transforms import Preprocessing, apply_preprocessing

__all__ = [
  'Lgg',
  'Preprocessing',
  'SliceArrays',
  'SliceRecord',
  'DataError',
  'Split',
  'apply_preprocessing',
  'build_dataset',
  'check_batch_size',
  'check_disjoint',
  'eval_batches',
  'fingerprint',
  'load_arrays',
  'load_dataset',
  'make_split',
  'patient_folds',
  'patient_kfold',
  'patient_split',
  'read_slice',
  'scan',
  'slice_split',
  'split_record',
  'summarize',
  'train_batches',
  'write_phantom',
]

_FROM_BUILDER = ('Lgg', 'build_dataset', 'load_arrays', 'load_dataset')


def __getattr__(name: str):
  if name in _FROM_BUILDER:
    return getattr(importlib.import_module('jaxbrain.data.builder'), name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
