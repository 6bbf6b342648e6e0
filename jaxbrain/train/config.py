"""Training configuration: one frozen dataclass, the report's settings by default."""
from __future__ import annotations

import dataclasses
import re
from typing import Optional

from jaxbrain.data.transforms import AUGMENTED, VARIANTS
from jaxbrain.errors import ConfigError
from jaxbrain.models.heads import REPORT_HEAD_DROPOUT, REPORT_HEAD_HIDDEN
from jaxbrain.models.resnet import FROZEN_BN

TASKS = ('classify', 'segment')
STRATEGIES = ('feature_extractor', 'finetune')
INITS = ('imagenet', 'scratch')
OPTIMIZERS = ('sgd', 'adam')
SCHEDULES = ('constant', 'cosine')
SAFE_NAME = re.compile(r'[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}')  # run and experiment folder names


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything a classification run depends on; saved as `config.json` in the run directory."""
  experiment: str = 'adhoc'
  task: str = 'classify'  # 'segment': a ResUNet predicts the tumor mask
  arch: str = 'resnet18'  # segment: 'resunet' (residual encoder) or 'resnet18'/'resnet50' (ResNet encoder)
  strategy: str = 'finetune'  # 'feature_extractor': frozen backbone, train the head only
  preprocess: str = 'resize_flip_normalize'
  image_size: int = 224
  batch_size: int = 8
  epochs: int = 30
  learning_rate: float = 1e-4
  momentum: float = 0.5
  optimizer: str = 'sgd'
  lr_schedule: str = 'constant'  # 'cosine': decay to 0 over the run
  weight_decay: float = 0.0
  unet_width: int = 16  # segment: channels of the first ResUNet level
  compute_dtype: str = 'float32'  # 'bfloat16': mixed precision (float32 weights and BatchNorm statistics)
  head_hidden: tuple[int, ...] = REPORT_HEAD_HIDDEN
  dropout_rate: float = REPORT_HEAD_DROPOUT
  init: str = 'imagenet'
  weights: Optional[str] = None  # explicit weights file; else $JAXBRAIN_WEIGHTS, then the torch hub cache
  data_dir: Optional[str] = None  # a kaggle_3m folder; None = the embedded phantom dataset
  split: str = 'patient'
  fold: Optional[int] = None  # fold K of a 5-fold patient split is test (validation carved from the rest)
  seed: int = 0
  workdir: str = 'checkpoints'
  run_name: Optional[str] = None  # default: derived from split, fold, init, size and seed
  feature_cache: bool = True  # feature_extractor only: compute backbone features once
  frozen_bn: str = 'running'  # feature_extractor: the frozen backbone's BatchNorm statistics ('batch': PyTorch's)
  keep_checkpoints: int = 3
  bootstrap_samples: int = 1000
  phantom_patients: int = 16  # size of the embedded dataset when data_dir is None

  def __post_init__(self):
    for message in self.problems():
      raise ConfigError(message)

  def problems(self) -> list[str]:
    """What is impossible in this config, each as a one-line message naming the flag."""
    choices = [('task', TASKS), ('strategy', STRATEGIES), ('optimizer', OPTIMIZERS), ('lr_schedule', SCHEDULES),
               ('preprocess', VARIANTS + AUGMENTED), ('init', INITS), ('split', ('patient', 'slice')),
               ('frozen_bn', FROZEN_BN), ('compute_dtype', ('float32', 'bfloat16'))]
    problems = [f'--{name.replace("_", "-")} must be one of {", ".join(allowed)}; got {getattr(self, name)!r}'
                for name, allowed in choices if getattr(self, name) not in allowed]
    at_least = [('epochs', 1), ('batch_size', 1), ('unet_width', 1), ('keep_checkpoints', 1),
                ('bootstrap_samples', 0), ('phantom_patients', 3)]
    problems += [f'--{name.replace("_", "-")} must be at least {low}; got {getattr(self, name)}'
                 for name, low in at_least if getattr(self, name) < low]
    if not self.learning_rate > 0:
      problems.append(f'--learning-rate must be positive; got {self.learning_rate}')
    if not 0 <= self.momentum < 1 or not 0 <= self.dropout_rate < 1 or self.weight_decay < 0:
      problems.append(f'--momentum and the dropout rate must be in [0, 1) and --weight-decay >= 0; got '
                      f'{self.momentum}, {self.dropout_rate}, {self.weight_decay}')
    if self.fold is not None and not 0 <= self.fold < 5:
      problems.append(f'--fold must be 0-4 (a 5-fold patient split); got {self.fold}')
    if self.run_name is not None and not SAFE_NAME.fullmatch(self.run_name):
      problems.append(f'--run-name {self.run_name!r}: use letters, digits, ".", "_" and "-" only, not starting with '
                      '"." (a folder name inside the workdir, nothing that leaves it)')
    if not SAFE_NAME.fullmatch(self.experiment):
      problems.append(f'experiment name {self.experiment!r}: use letters, digits, ".", "_" and "-" only')
    multiple, why = self.image_size_rule()
    if self.image_size < 32 or self.image_size % multiple:
      problems.append(f'--image-size {self.image_size}: {why}')
    return problems

  def image_size_rule(self) -> tuple[int, str]:
    """(the multiple image sizes must be, why): what the model's downsampling can take."""
    if self.task == 'segment' and self.arch == 'resunet':
      return 16, 'the ResUNet halves its input 4 times and joins the halves back: use a multiple of 16, at least 32'
    if self.task == 'segment':
      return 32, 'the ResNet-encoder U-Net downsamples 32x and joins the levels back: use a multiple of 32'
    return 1, 'the ResNet downsamples 32x: use at least 32 (the report: 224)'

  def replace(self, **changes) -> 'TrainConfig':
    return dataclasses.replace(self, **changes)

  @property
  def resolved_run_name(self) -> str:
    if self.run_name:
      return self.run_name
    fold = f'-fold{self.fold}' if self.fold is not None else ''
    data = '' if self.data_dir else '-phantom'
    return f'{self.split}{fold}-{self.init}-{self.image_size}px-seed{self.seed}{data}'
