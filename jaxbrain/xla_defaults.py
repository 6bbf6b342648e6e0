"""XLA settings jaxbrain applies by default, where measurements on this project's CPUs showed them
faster without changing results beyond float tolerance (see docs/performance.md).

jaxbrain's entry points (and `jaxbrain.configure_cpu()`) put them into XLA_FLAGS before JAX creates
its CPU client; a flag the user already set wins, and JAXBRAIN_XLA_DEFAULTS=0 turns the defaults
off. Applied after JAX has run a computation, they leave the running backend unchanged.
"""
from __future__ import annotations

import os

# XLA's CPU backend fuses convolutions into YNNPACK calls; on x86 CPUs the weight-gradient
# convolutions of a ResNet training step run several times slower that way (bench/run.py).
CPU_FLAGS = ('--xla_cpu_experimental_ynn_fusion_type=-individual_convolution',)


def apply() -> list[str]:
  """Adds the default flags not already present in XLA_FLAGS; returns the ones added."""
  if os.environ.get('JAXBRAIN_XLA_DEFAULTS', '1') == '0':
    return []
  current = os.environ.get('XLA_FLAGS', '')
  added = [flag for flag in CPU_FLAGS if flag.split('=')[0] not in current]
  if added:
    os.environ['XLA_FLAGS'] = ' '.join([current, *added]).strip()
  return added
