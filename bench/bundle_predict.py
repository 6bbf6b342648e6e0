"""`jaxbrain predict` with a model bundle, end to end: process start to the last file written.

  python bench/bundle_predict.py --model checkpoints/models/lgg-seg01 --patient DIR/TCGA_CS_4941_19960909 --out R
  python bench/bundle_predict.py --stand-in --patient DIR/TCGA_CS_4941_19960909 --out R

Times, each in a fresh process, the bundle and one member of it alone (a bundle of its first
member's weights) on one patient folder and on a 155-slice NIfTI case (the NIfTI phantom writer
makes one): cold (an empty compilation cache) and warm (the cache the cold run filled). The
machine is named in the result. `--stand-in` times a bundle of five randomly initialized members
of seg01's architecture in place of trained ones (the work per slice is the same; the masks, and
so the post-processing's share, differ): for timing only, its outputs mean nothing. The last
line printed is one JSON object, also written to OUT/bundle_predict.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jaxbrain import machine, safetensors_io  # noqa: E402
from jaxbrain.bundle import FORMAT, write_checksums  # noqa: E402
from jaxbrain.folders import BundleDir  # noqa: E402


def first_member_alone(model: Path, out: Path) -> Path:
  """A bundle of `model`'s first member only (the same decisions)."""
  source, folder = BundleDir(model), BundleDir(out)
  record = json.loads(source.model.read_text())
  folder.weights.mkdir(parents=True)
  shutil.copy(source.path / record['members'][0]['weights'], folder.member_weights(0))
  record['members'] = record['members'][:1]
  folder.model.write_text(json.dumps(record))
  write_checksums(folder)
  return folder.path


def stand_in(out: Path, members: int) -> Path:
  """A bundle of `members` randomly initialized ResUNets of seg01's settings, with the shipped
  model's decisions (the rule and detector the seg01 ensemble chose), for timing only."""
  import jax
  import jax.numpy as jnp

  from jaxbrain import models
  from jaxbrain.config import Config

  config = Config.from_flags('segment', experiment='seg01', encoder='residual', unet_width=16, image_size=160,
                             preprocess='resize_flip_affine', context_slices=1, scale_volumes=True)
  model = models.build(config.model)
  folder = BundleDir(out)
  folder.weights.mkdir(parents=True)
  for k in range(members):
    variables = model.init({'params': jax.random.key(k)}, jnp.zeros((1, 160, 160, config.input_channels)), train=False)
    safetensors_io.write(folder.member_weights(k), safetensors_io.flatten(jax.tree.map(lambda x: jax.device_get(x),
                                                                                      variables)))
  rule = {'threshold': 0.5, 'min_pixels': 64, 'drop_single_slice': True, 'flip_average': True}
  folder.model.write_text(json.dumps({
      'format': FORMAT, 'name': 'stand-in', 'version': '0', 'task': 'segment', 'config': config.to_json(),
      'decisions': {'decision': {'threshold': 0.5, 'mask_rule': rule},
                    'detector': {'combination': 'segmenter', 'smoothing': 1, 'threshold': 0.45}},
      'members': [{'weights': f'weights/member{k}.safetensors'} for k in range(members)],
      'data': {'phantom_only': True}, 'licence': {'weights': 'none: random weights for timing'}}))
  write_checksums(folder)
  return folder.path


def timed(model: Path, inputs: list[str], cache: Path, out: Path) -> float:
  env = {**os.environ, 'JAXBRAIN_CACHE': str(cache)}
  start = time.perf_counter()
  subprocess.run([sys.executable, '-m', 'jaxbrain.cli', 'predict', *inputs, '--model', str(model), '--out', str(out),
                  '--no-progress', '--overwrite'], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL,
                 stderr=subprocess.DEVNULL)
  return round(time.perf_counter() - start, 1)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--model', help='the bundle to time')
  parser.add_argument('--stand-in', action='store_true', help='time a bundle of five random seg01 members instead')
  parser.add_argument('--patient', required=True, help='one kaggle_3m patient folder')
  parser.add_argument('--out', required=True)
  args = parser.parse_args()
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  from jaxbrain.data.phantom import write_nifti_phantom

  with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    model = stand_in(tmp / 'bundle', 5) if args.stand_in else Path(args.model)
    alone = first_member_alone(model, tmp / 'member0')
    files, _ = write_nifti_phantom(tmp / 'case', n_slices=155, in_plane=240, names='2021')
    cases = {'patient': [args.patient], 'nifti_155': [str(files['flair'].parent)]}
    slices = len([p for p in Path(args.patient).iterdir() if not p.stem.endswith('_mask')])
    result = {'machine': machine.describe(), 'model': 'stand-in (5 random seg01 members)' if args.stand_in else str(model),
              'patient_slices': slices, 'nifti_slices': 155, 'seconds': {}}
    for name, bundle in (('bundle', model), ('one_member', alone)):
      for case, inputs in cases.items():
        cache = tmp / f'cache-{name}-{case}'
        cold = timed(bundle, inputs, cache, tmp / 'pred')
        warm = timed(bundle, inputs, cache, tmp / 'pred')
        result['seconds'][f'{name}/{case}'] = {'cold': cold, 'warm': warm}
  (out / 'bundle_predict.json').write_text(json.dumps(result, indent=2))
  print(json.dumps(result))


if __name__ == '__main__':
  main()
