"""Files and folders written atomically (a temporary name, then a rename): a crash or a full disk
never leaves half a file, or half a folder, for a reader."""
from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np


def jsonable(value):
  """`value` with NumPy scalars as Python numbers, and NaN and infinities as None (JSON has neither)."""
  if isinstance(value, dict):
    return {k: jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [jsonable(v) for v in value]
  if isinstance(value, (np.floating, float)):
    return float(value) if math.isfinite(value) else None
  if isinstance(value, np.integer):
    return int(value)
  return value


def write_json(path: Path, value) -> None:
  """Writes atomically (temp file + rename): a reader never sees half a file."""
  tmp = path.with_suffix(path.suffix + '.tmp')
  tmp.write_text(json.dumps(jsonable(value), indent=2) + '\n', encoding='utf-8')
  tmp.replace(path)


def write_csv(path: Path, rows: list[dict], columns: tuple[str, ...] = ()) -> None:
  """Writes rows (columns: the first row's keys, else `columns`) to a temporary name and renames it:
  a full disk or a crash leaves no half-written file."""
  tmp = path.with_name(path.name + '.tmp')
  try:
    with open(tmp, 'w', newline='', encoding='utf-8') as f:
      writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else list(columns))
      writer.writeheader()
      writer.writerows(rows)
    tmp.replace(path)
  finally:
    tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def staged_folder(out_dir: Path) -> Iterator[Path]:
  """A folder to fill, made under a temporary name beside `out_dir` and renamed to it (an empty
  `out_dir` is replaced) when the block ends; removed if the block fails or is interrupted. It gets
  the permissions of a folder made with mkdir (mkdtemp's are owner-only: a shared model bundle
  would be unreadable to the other users)."""
  out_dir.parent.mkdir(parents=True, exist_ok=True)
  staging = Path(tempfile.mkdtemp(prefix=f'.{out_dir.name}-', dir=out_dir.parent))
  umask = os.umask(0)
  os.umask(umask)
  staging.chmod(0o777 & ~umask)
  try:
    yield staging
    if out_dir.exists():
      out_dir.rmdir()
    staging.rename(out_dir)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
