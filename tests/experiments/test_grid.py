"""The experiments: one source (experiments/configs.py) for the modules, the README table and the flags."""
import importlib
from pathlib import Path

import pytest

from experiments.common import PHANTOM_BUDGET, build_parser, phantom_budget, resolve
from experiments.configs import EXPERIMENTS, FINAL, GRID, table

README = Path(__file__).resolve().parents[2] / 'experiments' / 'README.md'


@pytest.mark.parametrize('name', sorted(EXPERIMENTS))
def test_every_module_runs_its_config(name):
  """Catches a module that states its own config (or another experiment's) instead of the table's."""
  module = importlib.import_module(f'experiments.{name}')
  assert module.CONFIG is EXPERIMENTS[name] and module.CONFIG.experiment == name


def test_readme_table_is_generated_from_the_configs():
  """Catches the README's experiment table drifting from the configs (regenerate it with
  `python -m experiments.configs`)."""
  assert table() in README.read_text()
  assert table().count('\n| `exp') == 20


def test_grid_is_the_full_product():
  """Catches a grid that repeats or misses a (preprocessing, model, strategy) combination, or strays
  from the report's settings."""
  combos = {(c.data.preprocess, c.model.arch, c.task.strategy) for c in GRID.values()}
  assert len(GRID) == len(combos) == 16
  for config in {**GRID, **FINAL}.values():
    if config.task.name == 'classify':
      assert config.model.init == 'imagenet' and config.data.image_size == 224 and config.data.split == 'patient'
      assert (config.batch_size, config.optimizer.learning_rate, config.optimizer.momentum) == (8, 1e-4, 0.5)


def test_help_lists_the_overrides():
  from experiments.exp20 import CONFIG
  text = build_parser(CONFIG).format_help()
  for flag in ('--data-dir', '--split', '--fold', '--epochs', '--batch-size', '--image-size', '--init', '--weights',
               '--workdir', '--seed', '--resume'):
    assert flag in text


def test_overrides_and_phantom_budget(capsys):
  from experiments.exp20 import CONFIG
  demo, _ = resolve(CONFIG, [])
  budget = PHANTOM_BUDGET['classify']
  assert {k: demo.flat()[k] for k in budget} == budget and demo.data.data_dir is None
  assert 'synthetic phantom' in capsys.readouterr().out
  real, args = resolve(CONFIG, ['--data-dir', '/data/kaggle_3m', '--split', 'slice', '--fold', '2', '--resume'])
  assert (real.data.data_dir, real.data.split, real.data.fold, real.model.init, real.data.image_size, real.epochs) == (
      '/data/kaggle_3m', 'slice', 2, 'imagenet', 224, 30)
  assert args.resume


def test_preprocess_override_accepts_the_augmented_variants_only_by_name():
  from experiments.seg01 import CONFIG
  config, _ = resolve(CONFIG, ['--data-dir', '/data/kaggle_3m', '--preprocess', 'resize_flip_affine'])
  assert config.data.preprocess == 'resize_flip_affine'
  with pytest.raises(SystemExit):
    resolve(CONFIG, ['--data-dir', '/data/kaggle_3m', '--preprocess', 'resize_rotate'])


def test_flags_follow_the_task():
  """Catches a flag that does not apply being accepted (a classification setting on a segmentation
  run, silently ignored before the sections) and the generated flags losing their help or types."""
  from experiments.exp20 import CONFIG
  from experiments.seg01 import CONFIG as SEG
  with pytest.raises(SystemExit):
    resolve(SEG, ['--data-dir', '/d', '--strategy', 'feature_extractor'])
  with pytest.raises(SystemExit):
    resolve(CONFIG, ['--data-dir', '/d', '--unet-width', '8'])
  config, _ = resolve(CONFIG, ['--data-dir', '/d', '--no-feature-cache', '--head-hidden', '64', '32', '--momentum', '0.9'])
  assert config.task.feature_cache is False and config.model.head_hidden == (64, 32)
  assert resolve(CONFIG, ['--data-dir', '/d', '--evals'])[0].task.evals == ()
  assert config.optimizer.momentum == 0.9
  text = build_parser(SEG).format_help()
  assert '--unet-width' in text and '--encoder' in text and '--strategy' not in text
  assert 'default: 16' in text


def test_the_demo_keeps_a_from_scratch_recipes_learning_rate():
  """Catches the demo budget raising exp21's Adam learning rate to the 0.01 meant for the report's
  SGD (tuned for ImageNet weights), which would make the demo diverge."""
  from experiments.exp21 import CONFIG
  demo, _ = resolve(CONFIG, [])
  assert demo.optimizer.learning_rate == CONFIG.optimizer.learning_rate
  assert demo.epochs == PHANTOM_BUDGET['classify']['epochs'] and 'learning_rate' not in phantom_budget(CONFIG)
  assert phantom_budget(EXPERIMENTS['exp20'])['learning_rate'] == PHANTOM_BUDGET['classify']['learning_rate']
