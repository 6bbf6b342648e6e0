"""The config: sections that hold only what applies, flat names, and config.json of both schemas."""
import dataclasses
import json

import pytest

from jaxbrain.config import SCHEMA_VERSION, ClassifyTask, Config, ResUNetConfig, ResNetConfig
from jaxbrain.errors import ConfigError


def test_a_setting_that_does_not_apply_cannot_be_set():
  """Catches the flat config's silent ignoring: --strategy on a segmentation run, --unet-width on a
  classifier, and a model section of the wrong task."""
  with pytest.raises(ConfigError, match='strategy: not settings of a segment run'):
    Config.from_flags('segment', strategy='feature_extractor')
  with pytest.raises(ConfigError, match='unet_width: not settings of a classify run'):
    Config.from_flags(unet_width=8)
  with pytest.raises(ConfigError, match='needs a ResUNetConfig'):
    dataclasses.replace(Config.from_flags('segment'), model=ResNetConfig())


def test_flat_names_reach_their_sections():
  """Catches a flat name landing in the wrong section (or none), e.g. --lr-schedule or --optimizer."""
  config = Config.from_flags('segment', optimizer='adam', lr_schedule='cosine', unet_width=8, encoder='resnet18',
                             image_size=64, epochs=3)
  assert (config.optimizer.name, config.optimizer.schedule) == ('adam', 'cosine')
  assert (config.model.unet_width, config.model.encoder, config.data.image_size, config.epochs) == (8, 'resnet18', 64, 3)
  assert config.flat()['lr_schedule'] == 'cosine' and config.flat()['task'] == 'segment'
  assert Config.from_flags(**{k: v for k, v in Config().flat().items() if k != 'task'}) == Config()


def test_problems_name_the_flag():
  """Catches messages that name a field users cannot type instead of the flag."""
  with pytest.raises(ConfigError, match='--lr-schedule must be one of constant, cosine'):
    Config.from_flags(lr_schedule='step')
  with pytest.raises(ConfigError, match='--image-size 40: the ResUNet halves'):
    Config.from_flags('segment', image_size=40)
  with pytest.raises(ConfigError, match='--init imagenet: the ResUNet residual encoder'):
    Config.from_flags('segment', init='imagenet')
  with pytest.raises(ConfigError, match='--context-slices: ImageNet weights take 3 channels'):
    Config.from_flags('segment', encoder='resnet18', init='imagenet', context_slices=1)
  with pytest.raises(ConfigError, match='--tumor-share must be below 1'):
    Config.from_flags('segment', tumor_share=1.0)
  with pytest.raises(ConfigError, match='--tumor-share must be at least 0'):
    Config.from_flags('segment', tumor_share=-0.5)


def test_the_mask_head_and_flip_averaging_refuse_what_they_cannot_do():
  """Catches a mask head accepted on a frozen backbone (its loss would train nothing the classifier
  uses) or at a size whose feature maps do not nest, flip averaging accepted where the feature
  cache holds no mirrored slices (it would silently score unflipped ones), and a score with the mask
  head accepted on a model without one."""
  with pytest.raises(ConfigError, match='--mask-head trains the backbone'):
    Config.from_flags(mask_head=True, strategy='feature_extractor', image_size=128)
  with pytest.raises(ConfigError, match='--mask-head: --image-size 100 must be a multiple of 32'):
    Config.from_flags(mask_head=True, image_size=100)
  with pytest.raises(ConfigError, match='--flip-average scores mirrored slices'):
    Config.from_flags(flip_average=True, strategy='feature_extractor')
  assert Config.from_flags(flip_average=True, strategy='feature_extractor', feature_cache=False).task.flip_average
  with pytest.raises(ConfigError, match='--score-with-mask-head needs the mask head'):
    Config.from_flags(score_with_mask_head=True)
  assert Config.from_flags(score_with_mask_head=True, mask_head=True, image_size=128).task.score_with_mask_head


@pytest.mark.parametrize('task', ['classify', 'segment'])
def test_config_json_round_trip(task):
  """Catches a section or tuple lost on the way through JSON (config.json is what predict loads)."""
  config = Config.from_flags(task, experiment='x', data_dir='/d', fold=2, seed=3)
  stored = json.loads(json.dumps(config.to_json()))
  assert stored['schema'] == SCHEMA_VERSION and Config.from_json(stored) == config


def test_runs_written_before_the_sections_still_load():
  """Schema 1 (flat, no schema key): `arch` named the segmenter's encoder ('resunet': the residual
  one) and carried settings that did not apply. Catches old runs becoming unreadable by predict."""
  segment = {'config': {'experiment': 'seg01', 'task': 'segment', 'arch': 'resunet', 'strategy': 'finetune',
                        'unet_width': 16, 'compute_dtype': 'float32', 'head_hidden': [256, 64], 'image_size': 128,
                        'optimizer': 'adam', 'lr_schedule': 'cosine', 'eval_fraction': 0.15, 'init': 'scratch'}}
  config = Config.from_json(segment)
  assert config.model == ResUNetConfig(encoder='residual', unet_width=16, init='scratch')
  assert (config.optimizer.name, config.optimizer.schedule, config.data.image_size) == ('adam', 'cosine', 128)
  classify = {'config': {'experiment': 'exp20', 'task': 'classify', 'arch': 'resnet18', 'unet_width': 16,
                         'head_hidden': [256, 64], 'strategy': 'feature_extractor', 'frozen_bn': 'batch'}}
  config = Config.from_json(classify)
  assert config.model.head_hidden == (256, 64) and config.task == ClassifyTask('feature_extractor', frozen_bn='batch')
