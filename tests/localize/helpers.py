"""Run copies with other stored decisions, shared by the prediction and Spark tests."""
import json
import shutil
from pathlib import Path


def with_mask_rule(run: Path, folder: Path, **rule) -> Path:
  """A copy of segmentation run `run` in `folder` whose decision.json holds the mask rule `rule`
  (unnamed fields keep `MaskRule`'s defaults)."""
  copy = shutil.copytree(run, folder)
  decision = json.loads((copy / 'decision.json').read_text())
  (copy / 'decision.json').write_text(json.dumps({**decision, 'mask_rule': rule}))
  return copy


LONE_TUMOR_CASE = 'TCGA_ZZ_0001_20000101'


def lone_tumor_patient(tree: Path, root: Path) -> Path:
  """A patient folder under `root` whose tumor shows on its last slice only: the slices of the first
  tumor patient of kaggle_3m `tree` up to its first tumor slice, renamed to LONE_TUMOR_CASE."""
  from jaxbrain.data import kaggle3m

  records = kaggle3m.scan(tree)
  patient = next(r.patient for r in records if kaggle3m.read_mask(r.mask_path).any())
  mine = sorted((r for r in records if r.patient == patient), key=lambda r: r.slice)
  last = next(k for k, r in enumerate(mine) if kaggle3m.read_mask(r.mask_path).any())
  folder = root / LONE_TUMOR_CASE
  folder.mkdir(parents=True)
  for number, record in enumerate(mine[:last + 1], start=1):
    for source, suffix in ((record.image_path, ''), (record.mask_path, '_mask')):
      shutil.copy(source, folder / f'{LONE_TUMOR_CASE}_{number}{suffix}{source.suffix}')
  return folder


def store_gate(classifier: Path, segmenter: Path, gate: float | None) -> Path:
  """Stores `gate` for the pair as `jaxbrain gate` would (None: no gate); returns the file."""
  from jaxbrain.runs import gate_path, load_run

  path = gate_path(load_run(segmenter, 'segment'), load_run(classifier, 'classify'))
  path.parent.mkdir(exist_ok=True)
  path.write_text(json.dumps({'gate': gate}))
  return path
