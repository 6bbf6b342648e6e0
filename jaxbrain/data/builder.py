"""TFDS builder for the LGG kaggle_3m dataset (manual download), stored as array_record.

Builds and reads without TensorFlow: images are yielded as PNG bytes (encoding NumPy arrays would
call `tf.image.encode_png`) and read back with `tfds.data_source`.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import functools
import hashlib
import io
import shutil
import tempfile
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core.utils import tqdm_utils
from PIL import Image

from jaxbrain.data import kaggle3m
from jaxbrain.data.arrays import SliceArrays

SPLIT = 'full'  # one TFDS split with every slice; jaxbrain.data.splits makes train/eval by index


class Lgg(tfds.core.GeneratorBasedBuilder):
  """LGG brain MRI slices (Buda et al. 2019) with FLAIR-abnormality masks."""

  VERSION = tfds.core.Version('1.1.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.', '1.1.0': 'Each slice keeps its path relative to kaggle_3m.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Download the "LGG Segmentation Dataset" from Kaggle
  (https://www.kaggle.com/datasets/mateuszbuda/lgg-mri-segmentation), unzip it, and pass the
  folder `kaggle_3m` (the one holding TCGA_<inst>_<id>_<date>/ patient folders and data.csv) as
  the manual dir: `jaxbrain.data.build_dataset('/path/to/kaggle_3m')` or
  `python -m experiments.exp20 --data-dir /path/to/kaggle_3m`. Both the original .tif files and
  lossless .png conversions with the same names are accepted.
  """

  def _log_download_bytes(self) -> None:
    """Silent: TFDS would announce a download of 'Unknown size'; the build reads local files."""

  def _log_download_done(self) -> None:
    """Silent: the runs say where their data came from (config.json, the console's first lines)."""

  def _info(self) -> tfds.core.DatasetInfo:
    size = kaggle3m.IMAGE_SIZE
    return self.dataset_info_from_configs(
        description='Brain MR slices of 110 TCGA lower-grade glioma patients with tumor masks.',
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(size, size, 3)),
            'mask': tfds.features.Image(shape=(size, size, 1)),
            'label': tfds.features.ClassLabel(names=['no_tumor', 'tumor']),
            'patient': tfds.features.Text(),
            'institution': tfds.features.Text(),
            'slice': np.int32,
            'path': tfds.features.Text(),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://www.kaggle.com/datasets/mateuszbuda/lgg-mri-segmentation',
        citation="""@article{buda2019association,
  title={Association of genomic subtypes of lower-grade gliomas with shape features automatically
         extracted by a deep learning algorithm},
  author={Buda, Mateusz and Saha, Ashirbani and Mazurowski, Maciej A},
  journal={Computers in Biology and Medicine}, volume={109}, year={2019}}""",
    )

  def _split_generators(self, dl_manager):
    records = kaggle3m.scan(dl_manager.manual_dir)
    return {SPLIT: self._generate_examples(records, Path(dl_manager.manual_dir))}

  def _generate_examples(self, records, root: Path):
    """Decodes and validates slices on a thread pool, a chunk at a time; a lossless .png image
    is stored as its own bytes (no re-encoding), masks are stored binarized."""
    notes = []
    for start in range(0, len(records), BUILD_CHUNK):
      chunk = records[start:start + BUILD_CHUNK]
      for record, (example, slice_notes) in zip(chunk, kaggle3m.map_slices(functools.partial(_example, root=root),
                                                                           chunk)):
        notes.append(slice_notes)
        yield f'{record.patient}_{record.slice:03d}', example
    kaggle3m.warn_notes(notes, root)


BUILD_CHUNK = 256  # slices decoded at once while building (bounds the memory of a build)


def _example(record: kaggle3m.SliceRecord, root: Path) -> tuple[dict, tuple[str, ...]]:
  decoded = kaggle3m.read_slice_noting(record)
  return {
      'image': decoded.image_png if decoded.image_png is not None else _png(decoded.image),
      'mask': _png(decoded.mask[..., None]),
      'label': int(decoded.mask.any()),
      'patient': record.patient,
      'institution': record.institution,
      'slice': record.slice,
      'path': record.image_path.relative_to(root).as_posix(),
  }, decoded.notes


def _png(array: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array).save(buffer, 'PNG')
  return buffer.getvalue()


def default_data_dir(kaggle_dir: str | Path, cache_root: str | Path = 'checkpoints/tfds',
                     content: str | None = None) -> Path:
  """The TFDS data dir of a kaggle_3m tree: keyed by its path and its content's fingerprint, so a
  tree whose files changed (added, removed, rewritten, truncated) is built anew, never read stale."""
  where = hashlib.sha1(str(Path(kaggle_dir).resolve()).encode()).hexdigest()[:12]
  return Path(cache_root) / f'{where}-{content or kaggle3m.fingerprint(kaggle_dir)}'


@contextlib.contextmanager
def _tempdir_removed_after():
  """Points Python's temporary folder into a fresh one, removed on exit. TFDS makes an empty
  `tmp*tfds` folder each time it sets up a dataset not yet built (it looks for precomputed
  metadata on GCS) and never removes it: one leftover in /tmp per build otherwise."""
  scratch = tempfile.mkdtemp(prefix='jaxbrain-tfds-')
  previous, tempfile.tempdir = tempfile.tempdir, scratch
  try:
    yield
  finally:
    tempfile.tempdir = previous
    shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def _locked(path: Path):
  """An exclusive lock on `path` (created): two processes building one dataset take turns."""
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, 'a') as handle:
    fcntl.flock(handle, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _tfds_progress(shown: bool):
  """TFDS's own bars ("Generating ... examples", "Shuffling ...") on or off while a build runs, and
  as they were afterwards (TFDS keeps the switch in a module global and offers no reader for it)."""
  before = tqdm_utils._active  # pylint: disable=protected-access
  tfds.display_progress_bar(shown)
  try:
    yield
  finally:
    tfds.display_progress_bar(before)


def build_dataset(kaggle_dir: str | Path, data_dir: str | Path | None = None, progress: bool = True) -> Lgg:
  """Validates `kaggle_dir` and builds the TFDS dataset (once; later calls reuse it); `progress`
  False keeps TFDS's bars off.

  The build runs under a lock beside `data_dir`, and a failed build removes its incomplete files,
  so nothing half-written is mistaken for a dataset. Builds of the same tree's older contents
  (same path, another fingerprint) are removed when a new one completes.
  """
  kaggle_dir = Path(kaggle_dir)
  data_dir = Path(data_dir) if data_dir is not None else default_data_dir(kaggle_dir)
  with _locked(data_dir.with_name(data_dir.name + '.lock')):
    with _tempdir_removed_after():
      builder = Lgg(data_dir=str(data_dir), file_format='array_record')
    if not Path(builder.data_dir).exists():
      kaggle3m.scan(kaggle_dir)  # fail fast on layout problems, before TFDS creates anything
      try:
        with _tfds_progress(progress):
          builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(kaggle_dir)))
      except BaseException:
        for leftover in Path(data_dir).glob('lgg/incomplete.*'):
          shutil.rmtree(leftover, ignore_errors=True)
        if not Path(builder.data_dir).exists():
          shutil.rmtree(data_dir, ignore_errors=True)
        raise
      _remove_stale_builds(data_dir)
  return builder


def _remove_stale_builds(data_dir: Path) -> None:
  where = data_dir.name.split('-')[0]
  for other in data_dir.parent.glob(f'{where}-*'):
    if other.is_dir() and other != data_dir:
      shutil.rmtree(other, ignore_errors=True)
      other.with_name(other.name + '.lock').unlink(missing_ok=True)


def load_arrays(builder: Lgg) -> SliceArrays:
  """Reads every example of a built dataset into host memory, sorted by (patient, slice). TFDS
  hands over the stored PNG bytes and a thread per core decodes them straight into the arrays."""
  source = builder.as_data_source(split=SPLIT, decoders={'image': tfds.decode.SkipDecoding(),
                                                         'mask': tfds.decode.SkipDecoding()})
  examples = [source[i] for i in range(len(source))]
  decode = lambda value: value.decode() if isinstance(value, bytes) else str(value)
  examples.sort(key=lambda e: (decode(e['patient']), int(e['slice'])))
  size = kaggle3m.IMAGE_SIZE
  image, mask = np.empty((len(examples), size, size, 3), np.uint8), np.empty((len(examples), size, size), np.uint8)

  def decode_into(i: int) -> None:
    image[i] = np.asarray(Image.open(io.BytesIO(examples[i]['image'])))
    mask[i] = np.asarray(Image.open(io.BytesIO(examples[i]['mask'])))

  with concurrent.futures.ThreadPoolExecutor(kaggle3m.decode_workers()) as pool:  # PNG decoding releases the GIL
    list(pool.map(decode_into, range(len(examples))))
  return SliceArrays(
      image=image,
      mask=mask,
      label=np.array([e['label'] for e in examples], np.int32),
      patient=np.array([decode(e['patient']) for e in examples]),
      institution=np.array([decode(e['institution']) for e in examples]),
      slice=np.array([e['slice'] for e in examples], np.int32),
      path=np.array([decode(e['path']) for e in examples]),
  )


def load_dataset(kaggle_dir: str | Path, data_dir: str | Path | None = None, progress: bool = True) -> SliceArrays:
  """Builds (if needed) and loads a kaggle_3m tree: the one call experiments make."""
  return load_arrays(build_dataset(kaggle_dir, data_dir, progress))
