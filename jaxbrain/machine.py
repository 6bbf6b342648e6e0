"""The machine a process runs on, in words, for the records that state where a figure was made."""
from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_name() -> str:
  """The processor's model name (Linux: /proc/cpuinfo), else the platform's word for it."""
  cpuinfo = Path('/proc/cpuinfo')
  if cpuinfo.is_file():
    for line in cpuinfo.read_text(errors='replace').splitlines():
      if line.lower().startswith('model name'):
        return line.split(':', 1)[1].strip()
  return platform.processor() or platform.machine()


def describe() -> str:
  """'<CPU model>, <n> cores' plus the accelerators JAX sees, if any ('AMD EPYC, 2 cores')."""
  import jax

  accelerators = sorted({device.device_kind for device in jax.devices() if device.platform != 'cpu'})
  return f'{cpu_name()}, {os.cpu_count()} cores' + (f', {", ".join(accelerators)}' if accelerators else '')
