"""The folders jaxbrain writes, each owned here: the output root of training (`WorkDir`), a
training run's (`RunDir`), a model bundle's (`BundleDir`) and a prediction's (`PredictionDir`).
Every file name, the checkpoint layout and the run-folder formula are stated once; the runner, `runs.py`, `checkpoints.py`, `pages.py`, `predict` and `evaluate` ask these
classes for paths instead of spelling them."""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Sequence


# What a run folder holds, by the attribute that names it: the config and its facts, the patients of
# each side, what validation chose, the final (test) metrics, one line per epoch, one line per
# --epochs extension, the run page, one row per test slice, every mask rule tried, TensorBoard
# events, the evaluators' images, the gates chosen for pairs with a classifier; an ensemble's folder
# (`jaxbrain ensemble`) holds the same files for itself plus its record, its members' folders (each a
# run folder with the selected weights only) and its members' and its own figures on the decision set.
RUN_FILES = {'config': 'config.json', 'split': 'split.json', 'decision': 'decision.json', 'final_metrics': 'metrics.json',
             'history': 'metrics.jsonl', 'resumes': 'resumes.jsonl', 'report': 'report.html',
             'test_predictions': 'test_predictions.csv', 'mask_rules': 'mask_rules.csv', 'tensorboard': 'tensorboard',
             'overlays': 'overlays', 'gradcam': 'gradcam', 'gates': 'gates',
             'ensemble': 'ensemble.json', 'members': 'members', 'decision_set': 'decision_set.json'}


@dataclasses.dataclass(frozen=True)
class WorkDir:
  """The output root of training (`--workdir`, default `checkpoints/`): a folder per experiment
  holding its runs (`RunDir.at`), and beside them the datasets built from kaggle_3m folders, the
  embedded phantom data, the compiled-program cache and the locks of the runs being written."""
  path: Path

  def __post_init__(self):
    object.__setattr__(self, 'path', Path(self.path))

  tfds = property(lambda self: self.path / 'tfds', doc='TFDS datasets, one per source folder\'s content')
  xla_cache = property(lambda self: self.path / 'xla-cache', doc='compiled programs of the training runs')
  locks = property(lambda self: self.path / '.locks', doc='<experiment>/<run>.lock, held while a run is written')

  def phantom(self, patients: int) -> Path:
    """The embedded phantom dataset of `patients` synthetic patients (seed 0), a kaggle_3m tree."""
    return self.path / 'phantom' / f'{patients}p-seed0' / 'kaggle_3m'


@dataclasses.dataclass(frozen=True)
class RunDir:
  """A training run's folder, WORKDIR/EXPERIMENT/RUN_NAME: `RUN_FILES` by name, the plots, the
  checkpoint layout and the lock."""
  path: Path

  CHECKPOINT_KINDS = ('best', 'last')  # checkpoints/best/<step>, checkpoints/last/<step>
  CHECKPOINT_ITEMS = ('state', 'progress')  # a checkpoint step's orbax items

  @classmethod
  def at(cls, workdir: str | Path, experiment: str, run_name: str) -> RunDir:
    """The one formula of where a run lives."""
    return cls(Path(workdir) / experiment / run_name)

  @classmethod
  def of(cls, run: RunDir | str | Path) -> RunDir:
    """`run` itself, or the run folder at the path `run`."""
    return run if isinstance(run, RunDir) else cls(Path(run))

  def __post_init__(self):
    object.__setattr__(self, 'path', Path(self.path))

  def __str__(self) -> str:
    return str(self.path)

  @property
  def name(self) -> str:
    return self.path.name

  def __getattr__(self, name: str) -> Path:
    """`run.config`, `run.split`, ...: the files and folders of `RUN_FILES`."""
    if name in RUN_FILES:
      return self.path / RUN_FILES[name]
    raise AttributeError(f'{type(self).__name__} has no {name!r} (its files: {", ".join(RUN_FILES)})')

  PLOTS = ('curves.png', 'roc.png', 'confusion_matrix.png')

  def plot(self, name: str) -> Path:
    if name not in self.PLOTS:
      raise ValueError(f'{name}: not a run plot ({", ".join(self.PLOTS)})')
    return self.path / name

  @property
  def lock(self) -> Path:
    """WORKDIR/.locks/EXPERIMENT/RUN_NAME.lock: held while a process writes the run."""
    return WorkDir(self.path.parent.parent).locks / self.path.parent.name / f'{self.path.name}.lock'

  def checkpoints(self, kind: str) -> Path:
    """The folder of the `kind` ('best' or 'last') checkpoints, one step folder each."""
    if kind not in self.CHECKPOINT_KINDS:
      raise ValueError(f'{kind}: not a checkpoint kind ({", ".join(self.CHECKPOINT_KINDS)})')
    return self.path / 'checkpoints' / kind

  def checkpoint(self, relative: str) -> Path:
    """A checkpoint step folder from its name relative to checkpoints/ ('best/120')."""
    return self.path / 'checkpoints' / relative

  def checkpoint_name(self, folder: Path) -> str:
    """'best/120' for the step folder `folder` (what decision.json and gate names record)."""
    return Path(folder).relative_to(self.path / 'checkpoints').as_posix()

  @classmethod
  def checkpoint_state(cls, folder: Path) -> Path:
    """The train state's orbax item in a checkpoint step folder."""
    return folder / cls.CHECKPOINT_ITEMS[0]

  def newest_checkpoint(self, kind: str) -> Path | None:
    """The step folder of the newest complete `kind` checkpoint, or None."""
    folder = self.checkpoints(kind)
    steps = sorted(int(p.name) for p in folder.glob('*') if p.name.isdigit()) if folder.is_dir() else []
    return folder / str(steps[-1]) if steps else None

  def gate(self, classifier_experiment: str, classifier_run: str, classifier_checkpoint: str) -> Path:
    """Where the gate chosen for a pair with a classifier lives: named by the classifier's
    experiment, run and checkpoint ('best/120'), not its path, so that runs can move together."""
    return self.gates / f'{classifier_experiment}--{classifier_run}--{classifier_checkpoint.replace("/", "-")}.json'

  @property
  def own_detector(self) -> Path:
    """Where a segmenter's own detector lives (chosen by `jaxbrain gate --seg-run` without a classifier)."""
    return self.gates / 'segmenter-alone.json'


def tested_variables(saved_state: dict) -> dict:
  """The variables a checkpoint's saved train state was evaluated with: its weight average (`ema`)
  when it holds one, else its params and BatchNorm statistics (`TrainState.inference_variables`)."""
  return saved_state.get('ema') or {'params': saved_state['params'], 'batch_stats': saved_state['batch_stats']}


@dataclasses.dataclass(frozen=True)
class BundleDir:
  """A model bundle (`jaxbrain export`): everything `predict` needs in one folder that moves as a
  whole; `jaxbrain predict --model DIR` takes it."""
  path: Path

  FILES = {'model': 'model.json', 'card': 'MODEL_CARD.md', 'licence': 'LICENSE', 'checksums': 'SHA256SUMS'}

  def __post_init__(self):
    object.__setattr__(self, 'path', Path(self.path))

  model = property(lambda self: self.path / BundleDir.FILES['model'], doc='what predict needs, and the facts')
  card = property(lambda self: self.path / BundleDir.FILES['card'], doc='the model card, made from model.json')
  licence = property(lambda self: self.path / BundleDir.FILES['licence'], doc='the licence of the weights')
  checksums = property(lambda self: self.path / BundleDir.FILES['checksums'], doc='sha256sum lines of every file')
  weights = property(lambda self: self.path / 'weights', doc='one safetensors file per member')

  def member_weights(self, member: int) -> Path:
    return self.weights / f'member{member}.safetensors'

  @classmethod
  def holds_bundle(cls, path: str | Path) -> bool:
    return cls(path).model.is_file()


@dataclasses.dataclass(frozen=True)
class PredictionDir:
  """What `jaxbrain predict` writes and `jaxbrain evaluate` reads."""
  path: Path

  MARKER = '.jaxbrain-predict'  # written into every output folder; --overwrite replaces only such folders

  def __post_init__(self):
    object.__setattr__(self, 'path', Path(self.path))

  predictions = property(lambda self: self.path / 'predictions.csv', doc='one row per slice')
  summary = property(lambda self: self.path / 'summary.json', doc='per patient')
  report = property(lambda self: self.path / 'report.html', doc='the prediction page')
  masks = property(lambda self: self.path / 'masks', doc='a PNG mask per slice (with a segmenter)')
  overlays = property(lambda self: self.path / 'overlays', doc='a PNG overlay per slice')
  marker = property(lambda self: self.path / PredictionDir.MARKER)

  def mask(self, name: str) -> Path:
    return self.masks / f'{name}_mask.png'

  def overlay(self, name: str) -> Path:
    return self.overlays / f'{name}_overlay.png'

  def overlay_link(self, name: str) -> str:
    """The overlay's path relative to the folder (as the page links it)."""
    return self.overlay(name).relative_to(self.path).as_posix()

  def case_mask(self, case: str) -> Path:
    return self.path / f'{case}_mask.nii.gz'

  def case_seg(self, case: str) -> Path:
    """A DICOM case's mask as a DICOM SEG of its FLAIR series."""
    return self.path / f'{case}_seg.dcm'

  def case_probability(self, case: str) -> Path:
    """A NIfTI case's pixel tumor probabilities, before post-processing (with a segmenter)."""
    return self.path / f'{case}_probability.nii.gz'

  def case_disagreement(self, case: str) -> Path:
    """A NIfTI case's members' standard deviation of those probabilities (with a segmenter ensemble)."""
    return self.path / f'{case}_disagreement.nii.gz'

  @staticmethod
  def output_names(paths: Sequence[Path]) -> list[str]:
    """A file-name stem per input, unique: the input's own stem, plus a short hash of its full path
    where two inputs share a stem (e.g. the same file name in two folders)."""
    counts = {}
    for path in paths:
      counts[path.stem] = counts.get(path.stem, 0) + 1
    return [p.stem if counts[p.stem] == 1 else f'{p.stem}-{hashlib.sha1(str(p.resolve()).encode()).hexdigest()[:8]}'
            for p in paths]
