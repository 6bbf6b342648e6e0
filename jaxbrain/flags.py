"""The command-line flags jaxbrain's programs share (`jaxbrain`'s commands, the Spark job, the
experiments), each declared once with its default and its check, and `INFERENCE`, the defaults of
how trained runs are applied. Nothing here imports JAX: `--help` and a mistyped flag answer at once.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import re
import sys


@dataclasses.dataclass(frozen=True)
class InferenceConfig:
  """How trained runs are applied, stated once for `predict`, `gate`, `evaluate`, `ensemble` and the
  Spark job (their flags' defaults): slices per compiled call, and the patient-bootstrap resamples
  of the intervals with their seed. A training run's own test evaluation reads its `Config`'s
  `bootstrap_samples` and `seed`, whose defaults are these."""
  batch_size: int = 8
  bootstrap_samples: int = 1000
  seed: int = 0


INFERENCE = InferenceConfig()
"""The inference defaults of predict, gate, evaluate, ensemble and the Spark job."""


def at_least(low: int):
  """An argparse `type` for integers of at least `low`: a smaller one is refused in one line."""
  def parse(text: str) -> int:
    try:
      value = int(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f'{text!r} is not a whole number') from None
    if value < low:
      raise argparse.ArgumentTypeError(f'must be at least {low}; got {value}')
    return value
  return parse


class Parser(argparse.ArgumentParser):
  """argparse's parser, except that a mistyped flag is named with the nearest real one before
  anything else is said (argparse first complains that a required flag is missing, often the very
  one that was mistyped: `--ouput` gave "the following arguments are required: --out")."""

  def error(self, message: str):
    """argparse's one-line error, the flag first: "--batch-size must be at least 1; got 0"."""
    super().error(re.sub(r'^argument (--[\w-]+)(?:/\S+)?: ', r'\1 ', message))

  def parse_known_args(self, args=None, namespace=None):
    args = list(sys.argv[1:] if args is None else args)
    self._refuse_unknown_flags(args)
    return super().parse_known_args(args, namespace)

  def _refuse_unknown_flags(self, args: list[str]) -> None:
    known = [flag for flag in self._option_string_actions if flag.startswith('--')]
    commands = self._subparsers is not None
    for word in args:
      if word == '--' or (commands and not word.startswith('-')):
        return  # what follows is a subcommand's (checked by its own parser) or positional only
      flag = word.split('=', 1)[0]
      if flag.startswith('--') and not any(k.startswith(flag) for k in known):
        nearest = difflib.get_close_matches(flag, known, n=1)
        self.error(f'unrecognized flag {flag}' + (f'; did you mean {nearest[0]}?' if nearest else ''))


def add_inference_flags(command: argparse.ArgumentParser, batch_size: bool = False,
                        bootstrap_samples: bool = False) -> None:
  """The flags of `InferenceConfig` a command takes, with their defaults and checks."""
  if batch_size:
    command.add_argument('--batch-size', type=at_least(1), default=INFERENCE.batch_size,
                         help='slices per compiled call (default: %(default)s)')
  if bootstrap_samples:
    command.add_argument('--bootstrap-samples', type=at_least(0), default=INFERENCE.bootstrap_samples,
                         help='patient-bootstrap resamples for the 95%% intervals (0: none) (default: %(default)s)')


def add_debug_flag(command: argparse.ArgumentParser) -> None:
  command.add_argument('--debug', action='store_true',
                       help='on an unexpected error, print the traceback instead of writing a log')
