"""A model bundle read back and checked before use: the weights of a run or an ensemble as
safetensors files, `model.json` with everything `predict` needs, `SHA256SUMS`, `LICENSE` and
`MODEL_CARD.md` (`localize.export` writes one).

Every file listed in SHA256SUMS is hashed before anything is used: a changed byte, a missing
file, weights of another architecture, non-finite weights or a `model.json` of a newer format
are refused in one line naming the file and what to do. Loading needs neither orbax nor torch
(`safetensors_io` reads the weights). `load` takes a bundle or a run folder alike, so that
`predict`, the Spark job and `Scorer` take either.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxbrain import models, safetensors_io
from jaxbrain.config import Config
from jaxbrain.data.transforms import Preprocessing
from jaxbrain.decisions import Decision, Detector
from jaxbrain.folders import BundleDir
from jaxbrain.postprocess import MaskRule
from jaxbrain.runs import LoadedRun, RunError, load_run, read_json

FORMAT = 1  # model.json's format; a reader refuses a newer one
RESEARCH_ONLY = 'for research only: not a medical device, not for diagnosis or treatment'
SHIPPED = 'lgg-seg01'  # the bundle a checkout carries in checkpoints/models/


class BundleError(RunError):
  """A bundle that is damaged, incomplete, or written by a newer jaxbrain."""


def shipped_bundle() -> BundleDir:
  """Where a clone of the repository holds the shipped bundle (a wheel install has none)."""
  return BundleDir(Path(__file__).resolve().parent.parent / 'checkpoints' / 'models' / SHIPPED)


def sha256(path: Path) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def identity(folder: BundleDir) -> str:
  """The bundle's sha256: that of its SHA256SUMS, which names every file's own."""
  return sha256(folder.checksums)


def write_checksums(folder: BundleDir) -> None:
  """SHA256SUMS of every other file of the bundle, in `sha256sum` format (`listed_checksums` reads it)."""
  files = sorted(p.relative_to(folder.path).as_posix() for p in folder.path.rglob('*')
                 if p.is_file() and p != folder.checksums)
  folder.checksums.write_text(''.join(f'{sha256(folder.path / f)}  {f}\n' for f in files), encoding='utf-8')


def listed_checksums(folder: BundleDir) -> dict[str, str]:
  """{relative path: sha256} of SHA256SUMS (`sha256sum` lines: '<hex>  <path>')."""
  if not folder.checksums.is_file():
    raise BundleError(f'{folder.checksums}: missing, so the bundle cannot be checked; copy the whole bundle folder '
                      'again, or export it again (jaxbrain export RUN --out DIR)')
  listed = {}
  for number, line in enumerate(folder.checksums.read_text(encoding='utf-8').splitlines(), 1):
    digest, _, name = line.partition('  ')
    if len(digest) != 64 or not name:
      raise BundleError(f'{folder.checksums}: line {number} is not "<sha256>  <file>"; the bundle is damaged')
    listed[name] = digest
  return listed


def verify(folder: BundleDir) -> dict:
  """model.json of a bundle whose every file matches SHA256SUMS, in a format this jaxbrain reads;
  else a `BundleError` naming the file and what to do."""
  if not folder.model.is_file():
    raise BundleError(f'{folder.path}: not a model bundle (no {folder.model.name}); export one with: '
                      'jaxbrain export RUN --out DIR')
  listed = listed_checksums(folder)
  record = read_json(folder.model)
  weights = [member.get('weights') for member in record.get('members', [])]
  for name in [BundleDir.FILES['model'], *weights]:
    if name not in listed:
      raise BundleError(f'{folder.path / str(name)}: not listed in {folder.checksums.name}; the bundle is damaged: '
                        'export it again')
  for name, digest in listed.items():
    path = folder.path / name
    if not path.is_file():
      raise BundleError(f'{path}: missing (listed in {folder.checksums.name}); the bundle is incomplete: copy the whole '
                        'folder again')
    if sha256(path) != digest:
      raise BundleError(f'{path}: its sha256 differs from {folder.checksums.name} (changed or damaged); copy the bundle '
                        'again from its source, or export it again')
  if not isinstance(record.get('format'), int) or record['format'] > FORMAT:
    raise BundleError(f'{folder.model}: format {record.get("format")} is newer than this jaxbrain reads ({FORMAT}); '
                      'upgrade jaxbrain to use it')
  return record


def expected_shapes(config: Config, model) -> dict[str, tuple]:
  """{'/'-joined variable name: shape} of `config`'s model, without computing it."""
  size = config.data.image_size
  variables = jax.eval_shape(functools.partial(model.init, train=False), {'params': jax.random.key(0)},
                             jnp.zeros((1, size, size, config.input_channels)))
  return {name: tuple(leaf.shape) for name, leaf in safetensors_io.flatten(variables).items()}


def read_member(path: Path, expected: dict[str, tuple], what: str) -> dict:
  """A member's variables from its safetensors file, as float32, refused (naming the file) unless
  they are exactly those of `expected` and finite."""
  try:
    tensors, _ = safetensors_io.read(path)
  except safetensors_io.SafetensorsError as e:
    raise BundleError(f'{e}; the bundle is damaged: export it again') from None
  shapes = {name: tuple(t.shape) for name, t in tensors.items()}
  if shapes != expected:
    differs = sorted(set(shapes) ^ set(expected)) or [n for n in sorted(shapes) if shapes[n] != expected[n]]
    raise BundleError(f'{path}: its weights are not those of {what} (first difference: {differs[0]}); a member of '
                      'another architecture: export the bundle again from one run or ensemble')
  if not all(np.isfinite(t).all() for t in tensors.values()):
    raise BundleError(f'{path}: holds non-finite weights (NaN or inf); it is refused')
  return safetensors_io.unflatten({name: t.astype(np.float32) for name, t in tensors.items()})


def load_bundle(path: str | Path, task: str) -> LoadedRun:
  """A bundle as a `LoadedRun` (an ensemble's members as its members), after `verify`."""
  folder = BundleDir(path)
  record = verify(folder)
  if record.get('task') != task:
    wanted = {'classify': 'a classifier', 'segment': 'a segmenter'}[task]
    raise BundleError(f'{folder.model}: holds a {record.get("task")} model, but {wanted} is needed here')
  config = Config.from_json(record['config'])
  model = models.build(config.model)
  expected = expected_shapes(config, model)
  decisions = record['decisions']
  decision = Decision.from_json(decisions['decision'])
  detector = Detector.from_json(decisions['detector']) if decisions.get('detector') else None
  preprocessing = Preprocessing.from_name(config.data.preprocess, config.data.image_size)
  phantom = bool(record['data'].get('phantom_only'))
  members = tuple(
      LoadedRun(config, model, read_member(folder.path / member['weights'], expected, config.describe()), preprocessing,
                float(decision.threshold), phantom, folder.path, folder.path / member['weights'],
                decision.mask_rule or MaskRule())
      for member in record['members'])
  if not members:
    raise BundleError(f'{folder.model}: names no members; the bundle is damaged: export it again')
  first = members[0]
  return dataclasses.replace(first, checkpoint=folder.weights if len(members) > 1 else first.checkpoint,
                             members=members if len(members) > 1 else (), detector=detector, bundle=record)


def load(path: str | Path, task: str) -> LoadedRun:
  """A bundle (`load_bundle`) or a run or ensemble folder (`runs.load_run`)."""
  return load_bundle(path, task) if BundleDir.holds_bundle(path) else load_run(path, task)


def runs_to_score(run: str | None, seg_run: str | None, model: str | None) -> tuple[str | None, str | None]:
  """(classifier, segmenter) folders to score with: the runs named, else the bundle `model`, else
  the shipped one; where there is none, or `model` is not a bundle, a `BundleError` saying how to
  get one."""
  if model and (run or seg_run):
    raise BundleError('--model names a whole model: give it, or --run / --seg-run, not both')
  if run or seg_run:
    return run, seg_run
  if model is None:
    shipped = shipped_bundle()
    if not shipped.model.is_file():
      raise BundleError(f'no model named and none shipped here ({shipped.path} has no model.json; a pip-installed '
                        f'jaxbrain carries none): give --model with a clone\'s checkpoints/models/{SHIPPED}, export '
                        'your own (jaxbrain export RUN --out DIR), or name trained runs with --run / --seg-run')
    model = str(shipped.path)
  if not BundleDir.holds_bundle(model):
    raise BundleError(f'{BundleDir(model).model}: not found; --model takes a model bundle\'s folder (jaxbrain export '
                      'writes one); a trained run or ensemble goes with --run / --seg-run')
  return (model, None) if read_json(BundleDir(model).model).get('task') == 'classify' else (None, model)


def facts(run: LoadedRun) -> dict:
  """What outputs record of a bundle: its name, version, folder, sha256, licence and intended use."""
  record = run.bundle
  return {'name': record['name'], 'version': record['version'], 'folder': str(run.directory),
          'sha256': identity(BundleDir(run.directory)), 'weights_licence': record['licence']['weights'],
          'intended_use': RESEARCH_ONLY}


def headline(said: dict) -> str:
  """The line `predict` prints first for a bundle (`facts`): its name, version, sha256 and licence,
  and that it is for research only."""
  return (f'model {said["name"]} {said["version"]} ({said["folder"]}, sha256 {said["sha256"][:16]}, weights licensed '
          f'{said["weights_licence"]}): {said["intended_use"]}')
