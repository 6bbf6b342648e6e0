"""Each experiment module's config matches the table in experiments/README.md."""
import importlib
import re
from pathlib import Path

import pytest

from experiments.common import PHANTOM_BUDGET, build_parser, resolve

README = Path(__file__).resolve().parents[2] / 'experiments' / 'README.md'
PREPROCESS = {'resize 224': 'resize', 'resize 224 + normalize': 'resize_normalize', 'resize 224 + flip': 'resize_flip',
              'resize 224 + flip + normalize': 'resize_flip_normalize'}
STRATEGY = {'feature extractor': 'feature_extractor', 'fine-tune': 'finetune'}


def table_rows():
  rows = re.findall(r'^\| `(exp\d\d)` \| (.+?) \| (.+?) \| (.+?) \| (\d+) \| (\d+) \| ([\d.e-]+) \| ([\d.]+) \|',
                    README.read_text(), re.M)
  assert len(rows) == 20
  return rows


@pytest.mark.parametrize('row', table_rows(), ids=lambda r: r[0])
def test_module_matches_table(row):
  name, model, strategy, preprocess, batch, epochs, lr, momentum = row
  config = importlib.import_module(f'experiments.{name}').CONFIG
  assert config.experiment == name
  assert config.arch == model.lower()
  assert config.strategy == STRATEGY[strategy]
  assert config.preprocess == PREPROCESS[preprocess]
  assert (config.batch_size, config.epochs) == (int(batch), int(epochs))
  assert (config.learning_rate, config.momentum) == (float(lr), float(momentum))
  assert config.init == 'imagenet' and config.image_size == 224 and config.split == 'patient'


def test_grid_is_complete():
  combos = {(m, s, p) for _, m, s, p, *_ in table_rows()[:16]}
  assert len(combos) == 16
  finals = {r[0]: (r[1], r[2], r[3]) for r in table_rows()[16:]}
  assert finals['exp19'] == ('ResNet50', 'fine-tune', 'resize 224 + flip + normalize')
  assert finals['exp20'] == ('ResNet18', 'fine-tune', 'resize 224 + flip + normalize')


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
  assert {k: getattr(demo, k) for k in budget} == budget and demo.data_dir is None
  assert 'synthetic phantom' in capsys.readouterr().out
  real, args = resolve(CONFIG, ['--data-dir', '/data/kaggle_3m', '--split', 'slice', '--fold', '2', '--resume'])
  assert (real.data_dir, real.split, real.fold, real.init, real.image_size, real.epochs) == (
      '/data/kaggle_3m', 'slice', 2, 'imagenet', 224, 30)
  assert args.resume


def test_preprocess_override_accepts_the_augmented_variants_only_by_name():
  from experiments.seg01 import CONFIG
  config, _ = resolve(CONFIG, ['--data-dir', '/data/kaggle_3m', '--preprocess', 'resize_flip_affine'])
  assert config.preprocess == 'resize_flip_affine'
  with pytest.raises(SystemExit):
    resolve(CONFIG, ['--data-dir', '/data/kaggle_3m', '--preprocess', 'resize_rotate'])
