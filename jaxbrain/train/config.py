"""Training configuration: one frozen dataclass, the report's settings by default."""
from __future__ import annotations

import dataclasses
from typing import Optional

from jaxbrain.data.transforms import AUGMENTED, VARIANTS
from jaxbrain.models.heads import REPORT_HEAD_DROPOUT, REPORT_HEAD_HIDDEN

TASKS = ('classify', 'segment')
STRATEGIES = ('feature_extractor', 'finetune')
INITS = ('imagenet', 'scratch')
OPTIMIZERS = ('sgd', 'adam')
SCHEDULES = ('constant', 'cosine')


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
  fold: Optional[int] = None  # fold of a 5-fold patient split instead of the 85/15 one
  eval_fraction: float = 0.15
  seed: int = 0
  workdir: str = 'checkpoints'
  run_name: Optional[str] = None  # default: derived from split, fold, init, size and seed
  feature_cache: bool = True  # feature_extractor only: compute backbone features once
  keep_checkpoints: int = 3
  bootstrap_samples: int = 1000
  phantom_patients: int = 16  # size of the embedded dataset when data_dir is None

  def __post_init__(self):
    checks = [(self.task in TASKS, f'task must be one of {TASKS}'),
              (self.strategy in STRATEGIES, f'strategy must be one of {STRATEGIES}'),
              (self.optimizer in OPTIMIZERS, f'optimizer must be one of {OPTIMIZERS}'),
              (self.lr_schedule in SCHEDULES, f'lr_schedule must be one of {SCHEDULES}'),
              (self.preprocess in VARIANTS + AUGMENTED, f'preprocess must be one of {VARIANTS + AUGMENTED}'),
              (self.init in INITS, f'init must be one of {INITS}'),
              (self.split in ('patient', 'slice'), 'split must be "patient" or "slice"'),
              (self.compute_dtype in ('float32', 'bfloat16'), 'compute_dtype must be float32 or bfloat16'),
              (self.batch_size > 0 and self.epochs > 0 and self.image_size >= 32, 'sizes must be positive')]
    for ok, message in checks:
      if not ok:
        raise ValueError(f'{message}; got {dataclasses.asdict(self)}')

  def replace(self, **changes) -> 'TrainConfig':
    return dataclasses.replace(self, **changes)

  @property
  def resolved_run_name(self) -> str:
    if self.run_name:
      return self.run_name
    fold = f'-fold{self.fold}' if self.fold is not None else ''
    data = '' if self.data_dir else '-phantom'
    return f'{self.split}{fold}-{self.init}-{self.image_size}px-seed{self.seed}{data}'
