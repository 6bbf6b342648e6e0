"""Torchvision ResNet weights -> Flax variables, with every key and shape checked.

jaxbrain never downloads weights. A user provides torchvision's ImageNet files (`.pth`, as the
torch hub cache holds them, or `.safetensors` with the same keys); `find_weights` says exactly
what to get when none is found. Conversion is a fixed key table (torchvision name <-> Flax path),
conv kernels OIHW -> HWIO, linear weights transposed, BatchNorm weight/bias -> params scale/bias
and running_mean/var -> batch_stats mean/var. All problems are reported together.
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Mapping

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import traverse_util

from jaxbrain.errors import UserError
from jaxbrain.models.build import create_model

# torchvision's ImageNet files, as `torchvision.models.resnetNN(weights=...)` saves them in the hub cache
HUB_FILES = {
    'resnet18': ('resnet18-f37072fd.pth',),  # ResNet18_Weights.IMAGENET1K_V1
    'resnet50': ('resnet50-0676ba61.pth', 'resnet50-11ad3fa6.pth'),  # IMAGENET1K_V1, IMAGENET1K_V2
}
DOWNLOAD_URL = 'https://download.pytorch.org/models/{}'

# Flax module names that differ from torchvision's; others are equal ('conv1', 'bn2', 'fc', ...).
_MODULE_TO_TORCH = {'backbone': None, 'head': None, 'downsample_conv': 'downsample.0',
                    'downsample_bn': 'downsample.1'}
# (collection, Flax leaf) -> torchvision tensor name
_LEAF_TO_TORCH = {('params', 'kernel'): 'weight', ('params', 'scale'): 'weight', ('params', 'bias'): 'bias',
                  ('batch_stats', 'mean'): 'running_mean', ('batch_stats', 'var'): 'running_var'}
_SAFETENSORS_DTYPES = {'F64': np.float64, 'F32': np.float32, 'F16': np.float16, 'BF16': ml_dtypes.bfloat16,
                       'I64': np.int64, 'I32': np.int32, 'I16': np.int16, 'I8': np.int8, 'U8': np.uint8,
                       'BOOL': np.bool_}


class WeightsError(UserError, ValueError):
  """A weights file that cannot become the requested model; the message lists every problem."""


class WeightsNotFoundError(UserError, FileNotFoundError):
  """No weights file where jaxbrain looks; the message says which file to get and where to put it."""


def torch_key(collection: str, path: tuple[str, ...]) -> str:
  """('params', ('backbone', 'layer1_0', 'downsample_bn', 'scale')) -> 'layer1.0.downsample.1.weight'."""
  *modules, leaf = path
  names = []
  for module in modules:
    mapped = _MODULE_TO_TORCH.get(module, module.replace('_', '.') if module.startswith('layer') else module)
    if mapped:
      names.append(mapped)
  return '.'.join(names + [_LEAF_TO_TORCH[(collection, leaf)]])


def _to_flax(array: np.ndarray, leaf: str) -> np.ndarray:
  if leaf == 'kernel' and array.ndim == 4:
    return np.transpose(array, (2, 3, 1, 0))  # OIHW -> HWIO
  if leaf == 'kernel' and array.ndim == 2:
    return array.T  # [out, in] -> [in, out]
  return array


def _flax_shape(shape: tuple[int, ...], leaf: str) -> tuple[int, ...]:
  """The torchvision shape that converts to a Flax leaf of `shape`."""
  if leaf == 'kernel' and len(shape) == 4:
    return (shape[3], shape[2], shape[0], shape[1])
  if leaf == 'kernel' and len(shape) == 2:
    return shape[::-1]
  return shape


def key_table(arch: str) -> dict[str, tuple[str, tuple[str, ...], tuple[int, ...]]]:
  """torchvision key -> (collection, Flax path, expected torchvision shape) for the 1000-class model."""
  model = create_model(arch, num_classes=1000)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
  table = {}
  for collection in ('params', 'batch_stats'):
    for path, leaf in traverse_util.flatten_dict(shapes[collection]).items():
      table[torch_key(collection, path)] = (collection, path, _flax_shape(leaf.shape, path[-1]))
  return table


def detect_architecture(state: Mapping[str, np.ndarray]) -> str | None:
  """Names the torchvision ResNet a state_dict belongs to, from its block type and depth."""
  layer3 = {k.split('.')[1] for k in state if k.startswith('layer3.')}
  if not layer3:
    return None
  bottleneck = any(k.startswith('layer1.0.conv3.') for k in state)
  depth = {(False, 2): 'resnet18', (False, 6): 'resnet34', (True, 6): 'resnet50', (True, 23): 'resnet101',
           (True, 36): 'resnet152'}
  return depth.get((bottleneck, len(layer3)), f'a ResNet with {len(layer3)} blocks in layer3')


def convert_state_dict(arch: str, state: Mapping[str, np.ndarray], source: str = 'state_dict') -> dict:
  """A torchvision state_dict -> {'params', 'batch_stats'} of `create_model(arch, num_classes=1000)`."""
  table = key_table(arch)
  state = {k: np.asarray(v) for k, v in state.items() if not k.endswith('num_batches_tracked')}
  found = detect_architecture(state)
  if found is not None and found != arch:
    raise WeightsError(f'{source}: holds {found} weights, but {arch} was requested; '
                       f'pass --arch {found.split()[0]} or the {arch} file')
  problems = [f'missing key {k} (expected shape {table[k][2]})' for k in sorted(table.keys() - state.keys())]
  problems += [f'unexpected key {k} (shape {state[k].shape})' for k in sorted(state.keys() - table.keys())]
  problems += [f'wrong shape for {k}: {state[k].shape}, expected {table[k][2]}'
               for k in sorted(table.keys() & state.keys()) if tuple(state[k].shape) != table[k][2]]
  if problems:
    hint = '' if found else ' (is it a torchvision ResNet state_dict?)'
    raise WeightsError(f'{source}: cannot be loaded as torchvision {arch}{hint}; {len(problems)} problems:\n  '
                       + '\n  '.join(problems))
  flat = {(collection,) + path: _to_flax(state[key], path[-1]).astype(np.float32)
          for key, (collection, path, _) in table.items()}
  return traverse_util.unflatten_dict(flat)


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
  """Reads a .safetensors file with NumPy alone (8-byte header size, JSON header, raw data)."""
  raw = Path(path).read_bytes()
  try:
    (size,) = struct.unpack('<Q', raw[:8])
    header = json.loads(raw[8:8 + size])
    tensors = {}
    for name, info in header.items():
      if name == '__metadata__':
        continue
      begin, end = info['data_offsets']
      dtype = np.dtype(_SAFETENSORS_DTYPES[info['dtype']])
      data = raw[8 + size + begin:8 + size + end]
      if len(data) != dtype.itemsize * int(np.prod(info['shape'])):
        raise ValueError(f'tensor {name} is truncated')
      tensors[name] = np.frombuffer(data, dtype).reshape(info['shape'])
    return tensors
  except (struct.error, ValueError, KeyError, TypeError) as e:
    raise WeightsError(f'{path}: not a readable .safetensors file ({e})') from None


def read_torch(path: str | Path) -> dict[str, np.ndarray]:
  """Reads a PyTorch state_dict file (`torch.load(weights_only=True)`); PyTorch is needed only here."""
  try:
    import torch
  except ImportError:
    raise WeightsError(f'{path}: reading .pth files needs PyTorch (pip install torch), or convert the file '
                       'to .safetensors with the same keys') from None
  try:
    state = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # torch raises many types for a bad file
    first_line = str(e).strip().splitlines()[0] if str(e).strip() else 'unreadable'
    raise WeightsError(f'{path}: not a readable PyTorch state_dict ({type(e).__name__}: {first_line})') from None
  if isinstance(state, dict) and isinstance(state.get('state_dict'), dict):
    state = state['state_dict']
  if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
    raise WeightsError(f'{path}: holds a {type(state).__name__}, not a state_dict of tensors')
  return {k: v.detach().float().numpy() for k, v in state.items()}


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
  path = Path(path)
  if not path.is_file():
    raise WeightsNotFoundError(f'{path}: no such weights file')
  return read_safetensors(path) if path.suffix == '.safetensors' else read_torch(path)


def load_torchvision_weights(arch: str, path: str | Path) -> dict:
  """{'params', 'batch_stats'} of the 1000-class `arch` from a torchvision `.pth`/`.safetensors` file."""
  return convert_state_dict(arch, read_state_dict(path), source=str(path))


def hub_checkpoint_dir() -> Path:
  """Where torch hub caches downloads: $TORCH_HOME/hub/checkpoints (default ~/.cache/torch)."""
  torch_home = os.environ.get('TORCH_HOME') or Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache')) / 'torch'
  return Path(torch_home) / 'hub' / 'checkpoints'


def _candidates(arch: str, folder: Path) -> list[Path]:
  names = HUB_FILES[arch] + (f'{arch}.safetensors', f'{arch}.pth')
  return [folder / name for name in names]


def missing_weights_message(arch: str, looked: list[Path]) -> str:
  files = ' or '.join(DOWNLOAD_URL.format(name) for name in HUB_FILES[arch])
  return (
      f'no ImageNet weights for {arch} found (jaxbrain never downloads them). Get {files} '
      f'(torchvision\'s own file) and either put it in {hub_checkpoint_dir()}/, set JAXBRAIN_WEIGHTS to the '
      f'file or its folder, or pass --weights PATH (.pth, or .safetensors with torchvision key names). '
      f'To train from random initialization instead, pass --init scratch. Looked in: '
      + ', '.join(str(p) for p in looked))


def find_weights(arch: str, explicit: str | Path | None = None) -> Path:
  """The weights file for `arch`: `explicit` (e.g. --weights) when given, else $JAXBRAIN_WEIGHTS
  (a file, or a folder holding a hub file name or `<arch>.safetensors|.pth`), else the torch hub cache.

  Raises WeightsNotFoundError with instructions; never falls back to random weights.
  """
  if arch not in HUB_FILES:
    raise ValueError(f'unknown architecture {arch!r}; choose one of {sorted(HUB_FILES)}')
  if explicit is not None:
    if not Path(explicit).is_file():
      raise WeightsNotFoundError(f'{explicit}: no such weights file. ' + missing_weights_message(arch, [Path(explicit)]))
    return Path(explicit)
  looked = []
  env = os.environ.get('JAXBRAIN_WEIGHTS')
  if env:
    env_path = Path(env)
    if env_path.is_file():
      return env_path
    looked += _candidates(arch, env_path)
  looked += _candidates(arch, hub_checkpoint_dir())
  for path in looked:
    if path.is_file():
      return path
  raise WeightsNotFoundError(missing_weights_message(arch, looked))


def cached_torchvision_weights(arch: str, path: str | Path, cache_root: str | Path = 'checkpoints/pretrained') -> dict:
  """`load_torchvision_weights` with the converted variables saved by orbax under `cache_root/arch/`.

  The cache is keyed by the source file's path, size and mtime; a changed file is converted anew.
  """
  import orbax.checkpoint as ocp

  path = Path(path).resolve()
  stat = path.stat()
  source = {'path': str(path), 'size': stat.st_size, 'mtime_ns': stat.st_mtime_ns}
  cache = Path(cache_root).resolve() / arch
  stamp = cache / 'source.json'
  if stamp.is_file() and json.loads(stamp.read_text()) == source:
    return ocp.StandardCheckpointer().restore(cache / 'variables')
  variables = load_torchvision_weights(arch, path)
  stamp.unlink(missing_ok=True)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(cache / 'variables', variables, force=True)
  checkpointer.wait_until_finished()
  stamp.write_text(json.dumps(source))  # written last: marks the cache complete
  return variables


def with_pretrained_backbone(variables: dict, pretrained: dict) -> dict:
  """Replaces the backbone of a model's variables (any head) with the ported one; the head keeps
  its fresh initialization. Structure and every shape must match."""
  result = {collection: dict(tree) for collection, tree in variables.items()}
  for collection in ('params', 'batch_stats'):
    ours, theirs = variables[collection]['backbone'], pretrained[collection]['backbone']
    if jax.tree.structure(ours) != jax.tree.structure(theirs) or any(
        a.shape != b.shape for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs))):
      raise WeightsError(f'pretrained {collection} do not fit this backbone (another architecture?)')
    result[collection]['backbone'] = jax.tree.map(jnp.asarray, theirs)
  return result
