"""A run's configuration, stated once: frozen dataclasses in sections, saved as `config.json`.

`Config` holds the run-level settings and four sections: `data`, `model` (`ResNetConfig` for
classification, `ResUNetConfig` for segmentation), `optimizer` and `task` (`ClassifyTask` or
`SegmentTask`). A field that does not apply to the task is not there to be set. Every field has
one flat name, the command-line flag's (`--learning-rate`, `--unet-width`, ...): `Config.flags()`
lists them with help and choices, `with_flags(**changes)` applies flat overrides, and
`from_flags(**flat)` builds a config from flat names, as runs written before the sections
(`config.json` schema 1) stored it. Schema 2 stores the sections.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, ClassVar, Iterator, Optional, Union

from jaxbrain.data.splits import NUM_FOLDS
from jaxbrain.data.transforms import AUGMENTED, VARIANTS
from jaxbrain.errors import ConfigError
from jaxbrain.folders import RunDir
from jaxbrain.flags import INFERENCE
from jaxbrain.models.heads import REPORT_HEAD_DROPOUT, REPORT_HEAD_HIDDEN
from jaxbrain.models.resnet import ARCHITECTURES, FROZEN_BN
from jaxbrain.models.resunet import ENCODERS
from jaxbrain.tumour_type import TARGET_KEYS

__all__ = [
  'setting',
  'DataConfig',
  'ResNetConfig',
  'ResUNetConfig',
  'OptimizerConfig',
  'ClassifyTask',
  'SegmentTask',
  'TASK_SECTIONS',
  'SECTIONS',
  'Config',
]

SCHEMA_VERSION = 2
CHECKPOINT_EVERY_S = 300.0  # seconds between checkpoint writes: short epochs are not held up by writes
SAFE_NAME = re.compile(r'[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}')  # run and experiment folder names


def setting(default, help: str, choices: tuple = (), flag: str | None = None, at_least: float | None = None):
  """A config field with its command-line help, allowed values, flat name (default: the field's) and
  lower bound; all of it read by `Config.flags()` and `Config.problems()`."""
  metadata = {'help': help, 'choices': choices, 'flag': flag, 'at_least': at_least}
  if isinstance(default, tuple):
    return dataclasses.field(default_factory=lambda: default, metadata=metadata)
  return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """The data section: where the slices come from, how they are split, and how they are prepared."""
  data_dir: Optional[str] = setting(None, 'the kaggle_3m folder of the LGG dataset (.tif or .png); none: the '
                                    'embedded synthetic phantom demo')
  split: str = setting('patient', 'patient: train / validation / test patients, about 70/15/15; slice: the '
                       'report\'s random 85/15 slice split with 15%% of all slices carved from the 85 for validation '
                       '(patients leak)', ('patient', 'slice'))
  fold: Optional[int] = setting(None, f'fold 0-{NUM_FOLDS - 1} of a {NUM_FOLDS}-fold patient split as test '
                                '(validation carved from the other folds)')
  member: Optional[int] = setting(None, f'member 0-{NUM_FOLDS - 1} of an ensemble on the seed\'s split: trains on the '
                                  f'seed\'s training patients outside fold K of their {NUM_FOLDS}-fold split, selects '
                                  'its checkpoint on fold K, is scored on the seed\'s validation patients (the '
                                  'ensemble\'s decision set) and never reads its test patients')
  preprocess: str = setting('resize_flip_normalize', 'the report\'s variants, or one with random scale/rotation '
                            '(_affine) and/or random gamma and gain (_intensity)', VARIANTS + AUGMENTED)
  image_size: int = setting(224, 'resize target (the report: 224)')
  tumor_share: float = setting(0.0, 'share of tumor slices in each training epoch: every training tumor slice, and '
                               'tumor-free ones drawn afresh each epoch to make up the rest (0: every training slice '
                               'once, at their natural share)', at_least=0)
  phantom_patients: int = setting(16, 'patients of the embedded phantom dataset (without --data-dir)', at_least=3)
  type_target: Optional[str] = setting(None, 'a tumour-type model instead of a tumour detector: the tumour-bearing '
                                       'slices only, each labelled with its patient\'s answer to this question of '
                                       f'data.csv: {", ".join(TARGET_KEYS)} (jaxbrain.tumour_type; research use '
                                       'only)')


@dataclasses.dataclass(frozen=True)
class ResNetConfig:
  """A ResNet classifier with the report's head."""
  family: ClassVar[str] = 'resnet'  # what `models.build` makes of it
  arch: str = setting('resnet18', 'the ResNet', tuple(ARCHITECTURES))
  head_hidden: tuple[int, ...] = setting(REPORT_HEAD_HIDDEN, 'hidden sizes of the head (none: one linear layer)')
  dropout_rate: float = setting(REPORT_HEAD_DROPOUT, 'dropout of the head\'s hidden layers')
  compute_dtype: str = setting('float32', 'bfloat16: mixed precision (float32 weights and BatchNorm statistics; '
                               'GPU/TPU)', ('float32', 'bfloat16'))
  init: str = setting('imagenet', 'imagenet (needs the torchvision weights file) or scratch', ('imagenet', 'scratch'))
  weights: Optional[str] = setting(None, 'torchvision .pth or .safetensors file for --init imagenet (else '
                                   '$JAXBRAIN_WEIGHTS, then the torch hub cache)')
  mask_head: bool = setting(False, 'a light head on the backbone\'s feature pyramid predicting which 8x8-pixel '
                            'cells hold tumor, trained jointly with the classifier on the training patients\' masks')


@dataclasses.dataclass(frozen=True)
class ResUNetConfig:
  """A ResUNet segmenter: its own residual encoder, or a ResNet's."""
  family: ClassVar[str] = 'resunet'  # what `models.build` makes of it
  encoder: str = setting('residual', 'residual (trained from scratch) or a ResNet (ImageNet weights fit)', ENCODERS)
  unet_width: int = setting(16, 'channels of the first ResUNet level', at_least=1)
  deep_supervision: int = setting(0, 'decoder levels below the output that also predict the mask in training '
                                  '(deep supervision; their losses weigh 1/2, 1/4, ...)', at_least=0)
  init: str = setting('scratch', 'imagenet (a ResNet encoder, needs the torchvision weights file) or scratch',
                      ('imagenet', 'scratch'))
  weights: Optional[str] = setting(None, 'torchvision .pth or .safetensors file for --init imagenet')


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """The optimizer section: the update rule, its learning-rate schedule and regularization."""
  name: str = setting('sgd', 'the optimizer', ('sgd', 'adam'), flag='optimizer')
  learning_rate: float = setting(1e-4, 'peak learning rate')
  momentum: float = setting(0.5, 'SGD momentum')
  schedule: str = setting('constant', 'constant (the report) or cosine decay to 0 over the run',
                          ('constant', 'cosine'), flag='lr_schedule')
  weight_decay: float = setting(0.0, 'L2 weight decay (the report: 0)', at_least=0)
  ema_decay: float = setting(0.0, 'decay of an exponential moving average of the weights and BatchNorm statistics; '
                             'when on, the average is what validation, the checkpoint choice, test and jaxbrain '
                             'predict use (0: off; 0.99 averages over about the last 100 steps)', at_least=0)


@dataclasses.dataclass(frozen=True)
class ClassifyTask:
  """Tumor / no tumor per slice; the checkpoint is picked by validation ROC AUC."""
  strategy: str = setting('finetune', 'finetune: train every weight; feature_extractor: freeze the backbone, train '
                          'the head', ('feature_extractor', 'finetune'))
  feature_cache: bool = setting(True, 'feature extractor: compute the frozen backbone\'s features once (off: run it '
                                'every step)')
  frozen_bn: str = setting('running', 'feature extractor: the frozen backbone\'s BatchNorm uses its running '
                           '(ImageNet) statistics (running; needed by the feature cache) or batch statistics while '
                           'updating the running ones (batch: PyTorch\'s requires_grad=False in model.train())',
                           FROZEN_BN)
  evals: tuple[str, ...] = setting(('gradcam',), 'evaluators run on the test patients with the selected checkpoint '
                                   '(jaxbrain/evaluators)')
  mask_loss_weight: float = setting(1.0, 'with --mask-head: weight of its loss (binary cross-entropy per cell) '
                                    'beside the classification loss', at_least=0)
  flip_average: bool = setting(False, 'tumor probability averaged over the slice and its mirror image (test-time '
                               'augmentation; validation, test and jaxbrain predict alike)')
  score_with_mask_head: bool = setting(False, 'with --mask-head: the tumor probability is the geometric mean of '
                                       'the classifier\'s and the mask head\'s largest cell probability (validation, '
                                       'the checkpoint choice, test and jaxbrain predict alike)')
  name = 'classify'


@dataclasses.dataclass(frozen=True)
class SegmentTask:
  """The tumor mask per slice; the checkpoint is picked by validation per-volume Dice."""
  evals: tuple[str, ...] = setting(('overlays',), 'evaluators run on the test patients with the selected checkpoint '
                                   '(jaxbrain/evaluators)')
  context_slices: int = setting(0, 'neighbouring slices on each side of a slice given to the segmenter as extra '
                                'channels (2.5D input; 1: the slices below and above, 9 channels; within the '
                                'patient, the end slice repeated past the ends)', at_least=0)
  scale_volumes: bool = setting(False, 'rescale each patient\'s channels so that their 99th percentile inside the '
                                'head lands at one value, for the segmenter (scanners differ in intensity scale)')
  name = 'segment'


TASK_SECTIONS = {'classify': (ClassifyTask, ResNetConfig), 'segment': (SegmentTask, ResUNetConfig)}
"""Each task by name: its task section and the model section it trains."""
SECTIONS = ('data', 'model', 'optimizer', 'task')
"""A config's sections, in the order they are printed and stored."""


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything a run depends on; saved as `config.json` (schema 2) in the run directory."""
  experiment: str = 'adhoc'
  data: DataConfig = DataConfig()
  model: Union[ResNetConfig, ResUNetConfig] = ResNetConfig()
  optimizer: OptimizerConfig = OptimizerConfig()
  task: Union[ClassifyTask, SegmentTask] = ClassifyTask()
  batch_size: int = setting(8, 'slices per training step (a multiple of the devices)', at_least=1)
  epochs: int = setting(30, 'passes over the training slices (with --resume: may only be raised)', at_least=1)
  seed: int = setting(0, 'initialization, shuffling, augmentation and the split (fixed before tuning)')
  workdir: str = setting('checkpoints', 'output root')
  run_name: Optional[str] = setting(None, 'run folder name under WORKDIR/EXPERIMENT/ (default: from split, fold, '
                                    'init, size and seed)')
  keep_checkpoints: int = setting(1, 'how many of the newest checkpoints to keep for --resume, besides the selected '
                                  '(best) one that predict uses; more only to go back to earlier epochs', at_least=1)
  checkpoint_every_s: float = setting(CHECKPOINT_EVERY_S, 'seconds of training between checkpoint writes (0: every '
                                      'epoch); always one at the end and on SIGTERM / Ctrl-C, each with the best state '
                                      'when it changed since the last write; a kill loses at most this much',
                                      at_least=0)
  bootstrap_samples: int = setting(INFERENCE.bootstrap_samples, 'patient bootstrap resamples for 95%% intervals (0: none)', at_least=0)
  steps_per_dispatch: int = setting(0, 'training steps per jitted dispatch (a lax.scan over that many batches, so '
                                    'short steps do not wait on launches; 0: 1 on CPU, 8 on accelerators)', at_least=0)

  def __post_init__(self):
    for message in self.problems():
      raise ConfigError(message)

  # -- flat names ------------------------------------------------------------------------------

  def flags(self) -> Iterator[tuple[str, str | None, dataclasses.Field]]:
    """(flat name, section or None, field) of every setting this config has."""
    for field in dataclasses.fields(self):
      if field.name in SECTIONS:
        section = getattr(self, field.name)
        for inner in dataclasses.fields(section):
          yield inner.metadata.get('flag') or inner.name, field.name, inner
      elif field.metadata:
        yield field.name, None, field

  def flat(self) -> dict[str, Any]:
    """Every setting by its flat name, and `task` (classify / segment)."""
    values = {'experiment': self.experiment, 'task': self.task.name}
    for name, section, field in self.flags():
      values[name] = getattr(getattr(self, section) if section else self, field.name)
    return values

  def with_flags(self, **changes) -> 'Config':
    """This config with settings changed by flat name; a name this config does not have is an error."""
    if not changes:
      return self
    known = {name: (section, field.name) for name, section, field in self.flags()}
    unknown = sorted(set(changes) - set(known) - {'experiment'})
    if unknown:
      raise ConfigError(f'unknown settings {", ".join(unknown)}: not settings of a {self.task.name} run')
    top = {known[k][1]: v for k, v in changes.items() if k in known and known[k][0] is None}
    if 'experiment' in changes:
      top['experiment'] = changes['experiment']
    for section in SECTIONS:
      inner = {known[k][1]: v for k, v in changes.items() if k in known and known[k][0] == section}
      if inner:
        top[section] = dataclasses.replace(getattr(self, section), **inner)
    return dataclasses.replace(self, **top)

  @classmethod
  def from_flags(cls, task: str = 'classify', **flat) -> 'Config':
    """A config of `task` from flat names: `Config.from_flags(task='segment', unet_width=8, epochs=2)`."""
    if task not in TASK_SECTIONS:
      raise ConfigError(f'task must be one of {", ".join(TASK_SECTIONS)}; got {task!r}')
    task_cls, model_cls = TASK_SECTIONS[task]
    return dataclasses.replace(cls(), model=model_cls(), task=task_cls()).with_flags(**flat)

  # -- config.json -----------------------------------------------------------------------------

  def to_json(self) -> dict:
    """The config.json form: {'schema': 2, 'task': ..., 'config': the sections}."""
    return {'schema': SCHEMA_VERSION, 'task': self.task.name, 'config': dataclasses.asdict(self)}

  @classmethod
  def from_json(cls, stored: dict) -> 'Config':
    """A config from `config.json` (schema 2: sections; schema 1, before them: flat names)."""
    if stored.get('schema', 1) == 1:
      return cls.from_flags(**_schema1_flags(stored['config']))
    values = dict(stored['config'])
    task_cls, model_cls = TASK_SECTIONS[stored['task']]
    sections = {'data': DataConfig, 'model': model_cls, 'optimizer': OptimizerConfig, 'task': task_cls}
    for name, section_cls in sections.items():
      values[name] = section_cls(**_fields(section_cls, values[name]))
    return cls(**_fields(cls, values))

  # -- checks ----------------------------------------------------------------------------------

  def problems(self) -> list[str]:
    """What is impossible in this config, each as a one-line message naming the flag."""
    task_cls, model_cls = TASK_SECTIONS[self.task.name]
    if not isinstance(self.model, model_cls):
      return [f'a {self.task.name} run needs a {model_cls.__name__} model, not a {type(self.model).__name__}']
    problems = []
    for name, section, field in self.flags():
      value, flag = getattr(getattr(self, section) if section else self, field.name), '--' + name.replace('_', '-')
      if field.metadata['choices'] and value not in field.metadata['choices']:
        problems.append(f'{flag} must be one of {", ".join(field.metadata["choices"])}; got {value!r}')
      if field.metadata['at_least'] is not None and value < field.metadata['at_least']:
        problems.append(f'{flag} must be at least {field.metadata["at_least"]}; got {value}')
    if not self.optimizer.learning_rate > 0:
      problems.append(f'--learning-rate must be positive; got {self.optimizer.learning_rate}')
    if not self.optimizer.ema_decay < 1:
      problems.append(f'--ema-decay must be below 1 (0: off); got {self.optimizer.ema_decay}')
    if not self.data.tumor_share < 1:
      problems.append(f'--tumor-share must be below 1 (an epoch needs tumor-free slices too; 0: off); got '
                      f'{self.data.tumor_share}')
    if not 0 <= self.optimizer.momentum < 1:
      problems.append(f'--momentum must be in [0, 1); got {self.optimizer.momentum}')
    if isinstance(self.model, ResNetConfig) and not 0 <= self.model.dropout_rate < 1:
      problems.append(f'--dropout-rate must be in [0, 1); got {self.model.dropout_rate}')
    if self.data.fold is not None and not 0 <= self.data.fold < NUM_FOLDS:
      problems.append(f'--fold must be 0-{NUM_FOLDS - 1} (a {NUM_FOLDS}-fold patient split); got {self.data.fold}')
    if self.data.member is not None and not 0 <= self.data.member < NUM_FOLDS:
      problems.append(f'--member must be 0-{NUM_FOLDS - 1} (a {NUM_FOLDS}-member ensemble); got {self.data.member}')
    problems += self._combination_problems()
    multiple, why = self.image_size_rule()
    if self.data.image_size < 32 or self.data.image_size % multiple:
      problems.append(f'--image-size {self.data.image_size}: {why}')
    return problems

  def _combination_problems(self) -> list[str]:
    """What is impossible in how the flags combine, each as a one-line message naming the flags."""
    found = []
    if self.data.member is not None and (self.data.fold is not None or self.data.split != 'patient'):
      found.append('--member trains on the seed\'s patient split: drop --fold and --split slice')
    if self.run_name is not None and not SAFE_NAME.fullmatch(self.run_name):
      found.append(f'--run-name {self.run_name!r}: use letters, digits, ".", "_" and "-" only, not starting with '
                      '"." (a folder name inside the workdir, nothing that leaves it)')
    if not SAFE_NAME.fullmatch(self.experiment):
      found.append(f'experiment name {self.experiment!r}: use letters, digits, ".", "_" and "-" only')
    if isinstance(self.model, ResUNetConfig) and self.model.encoder == 'residual' and self.model.init == 'imagenet':
      found.append('--init imagenet: the ResUNet residual encoder has no ImageNet weights: pass --init scratch, '
                      'or --encoder resnet18/resnet50 for a ResNet encoder')
    if isinstance(self.task, ClassifyTask) and self.task.flip_average and self.task.strategy == 'feature_extractor' \
        and self.task.feature_cache:
      found.append('--flip-average scores mirrored slices, which the feature cache does not hold: pass '
                      '--no-feature-cache')
    if isinstance(self.model, ResNetConfig) and self.model.mask_head:
      if self.task.strategy != 'finetune':
        found.append('--mask-head trains the backbone: use it with --strategy finetune')
      if self.data.image_size % 32:
        found.append(f'--mask-head: --image-size {self.data.image_size} must be a multiple of 32 (the mask head '
                        'joins feature maps of strides 8, 16 and 32)')
    if isinstance(self.task, ClassifyTask) and self.task.score_with_mask_head and not self.model.mask_head:
      found.append('--score-with-mask-head needs the mask head: pass --mask-head too, or turn the score off '
                      '(--no-score-with-mask-head where it is the default, as in exp21)')
    if isinstance(self.task, SegmentTask) and self.task.context_slices and self.model.init == 'imagenet':
      found.append('--context-slices: ImageNet weights take 3 channels, not a slice\'s neighbours as well: pass '
                      '--init scratch')
    if self.data.type_target is not None and self.data.type_target not in TARGET_KEYS:
      found.append(f'--type-target must be one of {", ".join(TARGET_KEYS)}; got {self.data.type_target!r}')
    if self.data.type_target is not None and (not self.data.data_dir or self.task.name != 'classify'):
      found.append(f'--type-target {self.data.type_target}: a tumour-type model reads data.csv\'s codes and trains a '
                   'classifier: give --data-dir and a classification experiment')
    return found

  def image_size_rule(self) -> tuple[int, str]:
    """(the multiple image sizes must be, why): what the model's downsampling can take."""
    if isinstance(self.model, ResUNetConfig) and self.model.encoder == 'residual':
      return 16, 'the ResUNet halves its input 4 times and joins the halves back: use a multiple of 16, at least 32'
    if isinstance(self.model, ResUNetConfig):
      return 32, 'the ResNet-encoder U-Net downsamples 32x and joins the levels back: use a multiple of 32'
    return 1, 'the ResNet downsamples 32x: use at least 32 (the report: 224)'

  @property
  def input_channels(self) -> int:
    """Channels of the model's input: a slice's three, with its neighbours' for 2.5D segmentation."""
    return 3 * (2 * getattr(self.task, 'context_slices', 0) + 1)

  @property
  def run_dir(self) -> RunDir:
    """Where the runner writes this run: WORKDIR/EXPERIMENT/RUN_NAME."""
    return RunDir.at(self.workdir, self.experiment, self.resolved_run_name)

  @property
  def resolved_run_name(self) -> str:
    if self.run_name:
      return self.run_name
    fold = f'-fold{self.data.fold}' if self.data.fold is not None else ''
    fold += f'-member{self.data.member}' if self.data.member is not None else ''
    return self._run_name(fold)

  @property
  def group_name(self) -> str:
    """The folder beside the five fold (or member) runs that collects what they give together:
    their name with `folds` (`members`) in place of the fold's (member's) number."""
    return self._run_name('-members' if self.data.member is not None else '-folds')

  def _run_name(self, part: str) -> str:
    data = '' if self.data.data_dir else '-phantom'
    return f'{self.data.split}{part}-{self.model.init}-{self.data.image_size}px-seed{self.seed}{data}'

  def describe(self) -> str:
    """One line: model, training and data, for the console and the experiment table."""
    if isinstance(self.task, ClassifyTask):
      what = f'{self.model.arch} {self.task.strategy}'
    else:
      context = self.task.context_slices
      what = (f'ResUNet ({self.model.encoder} encoder, width {self.model.unet_width}) segmentation'
              + (f' (2.5D: {context} neighbouring slice(s) on either side)' if context else '')
              + (', volumes on one intensity scale' if self.task.scale_volumes else ''))
    opt = self.optimizer
    share = f', tumor share {self.data.tumor_share}' if self.data.tumor_share else ''
    return (f'{what}, {self.data.preprocess} {self.data.image_size}px{share}, batch {self.batch_size}, '
            f'{self.epochs} epochs, '
            f'{opt.name} lr {opt.learning_rate}' + (f' momentum {opt.momentum}' if opt.name == 'sgd' else '')
            + (f', {opt.schedule}' if opt.schedule != 'constant' else '')
            + (f', weight decay {opt.weight_decay}' if opt.weight_decay else '')
            + (f', weight average {opt.ema_decay}' if opt.ema_decay else '') + f', init {self.model.init}')


RETIRED_FLAT_NAMES = ('eval_fraction',)  # written by runs before the train / validation / test split


def _schema1_flags(flat: dict) -> dict:
  """The flat names of a schema-1 `config.json`, for `from_flags`: `arch` named the segmenter's
  encoder ('resunet': the residual one), and settings that did not apply to the task are dropped."""
  flat = {k: v for k, v in flat.items() if k not in RETIRED_FLAT_NAMES}
  task = flat.get('task', 'classify')
  if task == 'segment':
    arch = flat.pop('arch', 'resunet')
    flat['encoder'] = 'residual' if arch == 'resunet' else arch
    for name in ('strategy', 'compute_dtype', 'head_hidden', 'dropout_rate', 'feature_cache', 'frozen_bn'):
      flat.pop(name, None)
  else:
    flat.pop('unet_width', None)
  if 'head_hidden' in flat:
    flat['head_hidden'] = tuple(flat['head_hidden'])
  return flat


def _fields(cls, values: dict) -> dict:
  """Stored `values` of a `cls` section, with JSON lists back to the tuples its fields hold; names it
  does not have are an error."""
  unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
  if unknown:
    raise ConfigError(f'unknown settings {", ".join(unknown)}')
  tuple_fields = {f.name for f in dataclasses.fields(cls) if 'tuple' in str(f.type)}
  return {k: tuple(v) if k in tuple_fields and isinstance(v, list) else v for k, v in values.items()}
