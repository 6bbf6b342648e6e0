"""Ported weights give torchvision's numbers; every bad file gets a clear error."""
import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch
import torch

import jax
import jax.numpy as jnp
from jaxbrain.models import (WeightsError, WeightsNotFoundError, cached_torchvision_weights, create_model,
                             find_weights, load_torchvision_weights, with_pretrained_backbone)
from jaxbrain.models import porting
from tests.models.torch_reference import reference

ARCHS = ('resnet18', 'resnet50')


@pytest.fixture(scope='module', params=ARCHS)
def ported(request, tmp_path_factory):
  """(arch, torch reference, path of its .pth, path of its .safetensors)."""
  arch = request.param
  model = reference(arch)
  folder = tmp_path_factory.mktemp(arch)
  torch.save(model.state_dict(), folder / f'{arch}.pth')
  safetensors.torch.save_file(model.state_dict(), folder / f'{arch}.safetensors')
  return arch, model, folder / f'{arch}.pth', folder / f'{arch}.safetensors'


def inputs(n=4, size=224, seed=0):
  return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)


def test_logits_and_layer2_equal_the_reference(ported):
  arch, model, pth, st = ported
  x = inputs()
  with torch.no_grad():
    want_logits = model(torch.from_numpy(x)).numpy()
    want_layer2 = model(torch.from_numpy(x), upto='layer2').numpy().transpose(0, 2, 3, 1)
  flax_model = create_model(arch)
  for path in (pth, st):
    variables = load_torchvision_weights(arch, path)
    logits, state = flax_model.apply(variables, x.transpose(0, 2, 3, 1), train=False, mutable=['intermediates'])
    assert np.abs(np.asarray(logits) - want_logits).max() < 1e-4
    layer2 = np.asarray(state['intermediates']['backbone']['layer2'][0])
    assert np.abs(layer2 - want_layer2).max() < 1e-4


def test_train_mode_batchnorm_statistics_update_like_pytorch(ported):
  arch, model, pth, _ = ported
  x = inputs(n=4, size=64, seed=1)
  variables = load_torchvision_weights(arch, pth)
  model = reference(arch)  # fresh copy, then one train-mode forward updates running stats in place
  model.train()
  with torch.no_grad():
    model(torch.from_numpy(x))
  _, updated = create_model(arch).apply(variables, x.transpose(0, 2, 3, 1), train=True, mutable=['batch_stats'])
  want = porting.convert_state_dict(arch, {k: v.numpy() for k, v in model.state_dict().items()})['batch_stats']
  for got, expected in zip(jax.tree.leaves(updated['batch_stats']), jax.tree.leaves(want)):
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-4, atol=1e-5)


def test_pooled_features_and_report_head(ported):
  arch, _, _, st = ported
  pretrained = load_torchvision_weights(arch, st)
  model = create_model(arch, num_classes=2, head_hidden=(256, 64), dropout_rate=0.25)
  x = jnp.asarray(inputs(n=2, size=64).transpose(0, 2, 3, 1))
  variables = with_pretrained_backbone(model.init(jax.random.key(0), x), pretrained)
  assert set(variables['params']['head']) == {'fc1', 'fc2', 'fc3'}
  features = model.apply(variables, x, method='features')
  assert features.shape == (2, {'resnet18': 512, 'resnet50': 2048}[arch])
  reference_features = create_model(arch).apply(pretrained, x, method='features')
  np.testing.assert_allclose(features, reference_features, atol=1e-5)
  logits = model.apply(variables, x)
  assert logits.shape == (2, 2)
  np.testing.assert_allclose(logits, model.apply(variables, features, method='classify'), atol=1e-5)


def test_other_architecture_is_named(ported, tmp_path):
  arch, _, pth, _ = ported
  other = 'resnet50' if arch == 'resnet18' else 'resnet18'
  with pytest.raises(WeightsError, match=f'holds {arch} weights, but {other} was requested'):
    load_torchvision_weights(other, pth)


@pytest.fixture(scope='module')
def state18():
  return {k: v.numpy() for k, v in reference('resnet18').state_dict().items()}


def test_all_key_problems_reported_together(state18):
  state = dict(state18)
  del state['layer2.0.bn1.running_var']
  del state['fc.bias']
  state['layer9.weight'] = np.zeros(3, np.float32)
  state['layer1.0.conv1.weight'] = np.zeros((64, 64, 5, 5), np.float32)
  with pytest.raises(WeightsError) as error:
    porting.convert_state_dict('resnet18', state, 'bad.pth')
  message = str(error.value)
  assert '4 problems' in message
  assert 'missing key layer2.0.bn1.running_var' in message and 'missing key fc.bias (expected shape (1000,))' in message
  assert 'unexpected key layer9.weight' in message
  assert 'wrong shape for layer1.0.conv1.weight: (64, 64, 5, 5), expected (64, 64, 3, 3)' in message


def test_key_table_is_the_torchvision_name_set(state18):
  table = porting.key_table('resnet18')
  assert set(table) == {k for k in state18 if not k.endswith('num_batches_tracked')}
  assert table['layer2.0.downsample.1.running_mean'] == ('batch_stats', ('backbone', 'layer2_0', 'downsample_bn', 'mean'), (128,))


def test_unreadable_files(tmp_path):
  (tmp_path / 'junk.pth').write_bytes(b'not a zip or pickle')
  with pytest.raises(WeightsError, match='junk.pth: not a readable PyTorch state_dict'):
    load_torchvision_weights('resnet18', tmp_path / 'junk.pth')
  (tmp_path / 'junk.safetensors').write_bytes(b'\x05\x00\x00\x00\x00\x00\x00\x00{bad}')
  with pytest.raises(WeightsError, match='junk.safetensors: not a readable .safetensors'):
    load_torchvision_weights('resnet18', tmp_path / 'junk.safetensors')
  torch.save([1, 2, 3], tmp_path / 'list.pth')
  with pytest.raises(WeightsError, match='holds a list, not a state_dict'):
    load_torchvision_weights('resnet18', tmp_path / 'list.pth')
  with pytest.raises(WeightsNotFoundError, match='nope.pth: no such weights file'):
    load_torchvision_weights('resnet18', tmp_path / 'nope.pth')


def test_find_weights_order_and_help(tmp_path, monkeypatch):
  hub = tmp_path / 'torch' / 'hub' / 'checkpoints'
  monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
  monkeypatch.delenv('JAXBRAIN_WEIGHTS', raising=False)
  with pytest.raises(WeightsNotFoundError) as error:
    find_weights('resnet50')
  message = str(error.value)
  assert 'https://download.pytorch.org/models/resnet50-0676ba61.pth' in message
  assert str(hub) in message and '--init scratch' in message and 'JAXBRAIN_WEIGHTS' in message
  hub.mkdir(parents=True)
  (hub / 'resnet18-f37072fd.pth').write_bytes(b'x')
  assert find_weights('resnet18') == hub / 'resnet18-f37072fd.pth'
  own = tmp_path / 'mine'
  own.mkdir()
  (own / 'resnet18.safetensors').write_bytes(b'x')
  monkeypatch.setenv('JAXBRAIN_WEIGHTS', str(own))
  assert find_weights('resnet18') == own / 'resnet18.safetensors'
  assert find_weights('resnet18', explicit=hub / 'resnet18-f37072fd.pth') == hub / 'resnet18-f37072fd.pth'
  with pytest.raises(WeightsNotFoundError, match='missing.pth: no such weights file'):
    find_weights('resnet18', explicit=tmp_path / 'missing.pth')
  with pytest.raises(ValueError, match='unknown architecture'):
    find_weights('vgg16')


def test_converted_weights_cache(tmp_path, state18, monkeypatch):
  path = tmp_path / 'resnet18.safetensors'
  safetensors.numpy.save_file(state18, path)
  first = cached_torchvision_weights('resnet18', path, tmp_path / 'cache')
  assert (tmp_path / 'cache' / 'resnet18' / 'source.json').is_file()
  monkeypatch.setattr(porting, 'load_torchvision_weights', lambda *a: pytest.fail('cache not used'))
  second = cached_torchvision_weights('resnet18', path, tmp_path / 'cache')
  for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second)):
    np.testing.assert_array_equal(a, b)


def test_unknown_architecture():
  with pytest.raises(ValueError, match="unknown architecture 'resnet99'"):
    create_model('resnet99')
