"""LGG data: kaggle_3m scanning and validation, TFDS builder, splits, transforms, batches, phantoms."""
from jaxbrain.data.batching import check_batch_size, eval_batches, train_batches
from jaxbrain.data.builder import Lgg, SliceArrays, build_dataset, load_arrays, load_dataset
from jaxbrain.data.kaggle3m import DataError, SliceRecord, read_slice, scan, summarize
from jaxbrain.data.phantom import write_phantom
from jaxbrain.data.splits import Split, make_split, patient_kfold, patient_split, slice_split
from jaxbrain.data.transforms import Preprocess, preprocess
