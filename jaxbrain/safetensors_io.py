"""The safetensors file format, read and written with NumPy: a model bundle's weights load without
torch, orbax or the `safetensors` package, and the files still read with that package.

A file is an 8-byte little-endian header length, a JSON header naming each tensor's dtype, shape
and byte range (`data_offsets`, from the end of the header) plus an optional `__metadata__` of
strings, then the tensors' bytes, little-endian and C-ordered. Nested variables ({'params':
{'conv': {'kernel': ...}}}) are stored under '/'-joined names.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

DTYPES = {'F64': np.float64, 'F32': np.float32, 'F16': np.float16, 'I64': np.int64, 'I32': np.int32,
          'I16': np.int16, 'I8': np.int8, 'U8': np.uint8, 'BOOL': np.bool_}
CODES = {np.dtype(dtype): code for code, dtype in DTYPES.items()}
MAX_HEADER = 100_000_000  # bytes: a longer header is a damaged file, not a model


class SafetensorsError(ValueError):
  """A file that is not a well-formed safetensors file."""


def flatten(tree: dict, prefix: str = '') -> dict:
  """{'a': {'b': x}} -> {'a/b': x} (the leaves as they are)."""
  flat = {}
  for key, value in tree.items():
    if '/' in key:
      raise ValueError(f'{prefix}{key}: a name with "/" cannot be stored nested')
    if isinstance(value, dict):
      flat.update(flatten(value, f'{prefix}{key}/'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


def unflatten(flat: dict[str, np.ndarray]) -> dict:
  """{'a/b': x} -> {'a': {'b': x}} (the inverse of `flatten`)."""
  tree: dict = {}
  for name, value in flat.items():
    *parents, leaf = name.split('/')
    node = tree
    for key in parents:
      node = node.setdefault(key, {})
    node[leaf] = value
  return tree


def write(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
  """Writes `tensors` (flat names -> arrays) to `path` through a temporary name, in name order, so
  that the same tensors always give the same bytes."""
  header, offset, blobs = {}, 0, []
  for name in sorted(tensors):
    array = np.ascontiguousarray(tensors[name])
    if array.dtype not in CODES:
      raise ValueError(f'{name}: dtype {array.dtype} has no safetensors code')
    data = array.astype(array.dtype.newbyteorder('<'), copy=False).tobytes()
    header[name] = {'dtype': CODES[array.dtype], 'shape': list(array.shape), 'data_offsets': [offset, offset + len(data)]}
    blobs.append(data)
    offset += len(data)
  if metadata:
    header['__metadata__'] = {str(k): str(v) for k, v in metadata.items()}
  text = json.dumps(header, separators=(',', ':')).encode()
  text += b' ' * (-len(text) % 8)  # tensors start 8-byte aligned
  tmp = path.with_name(path.name + '.tmp')
  with open(tmp, 'wb') as f:
    f.write(struct.pack('<Q', len(text)))
    f.write(text)
    for blob in blobs:
      f.write(blob)
  tmp.replace(path)


def read(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  """(tensors, metadata) of a safetensors file; a malformed one is a `SafetensorsError` naming it."""
  raw = Path(path).read_bytes()
  if len(raw) < 8:
    raise SafetensorsError(f'{path}: too short for a safetensors file')
  (length,) = struct.unpack('<Q', raw[:8])
  if length > min(MAX_HEADER, len(raw) - 8):
    raise SafetensorsError(f'{path}: its header length ({length} bytes) exceeds the file')
  try:
    header = json.loads(raw[8:8 + length])
  except (json.JSONDecodeError, UnicodeDecodeError):
    raise SafetensorsError(f'{path}: its header is not JSON') from None
  body = memoryview(raw)[8 + length:]
  metadata = header.pop('__metadata__', {}) or {}
  tensors = {}
  for name, entry in header.items():
    try:
      dtype = np.dtype(DTYPES[entry['dtype']]).newbyteorder('<')
      start, stop = entry['data_offsets']
      shape = tuple(entry['shape'])
    except (KeyError, TypeError, ValueError):
      raise SafetensorsError(f'{path}: tensor {name} has a malformed header entry') from None
    if not 0 <= start <= stop <= len(body) or stop - start != int(np.prod(shape)) * dtype.itemsize:
      raise SafetensorsError(f'{path}: tensor {name}\'s bytes do not match its shape {list(shape)}')
    tensors[name] = np.frombuffer(body[start:stop], dtype).reshape(shape).astype(dtype.newbyteorder('='))
  return tensors, metadata
