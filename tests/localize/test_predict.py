"""`jaxbrain predict` end to end on phantom data with tiny trained runs."""
import csv
import json
import shutil

import numpy as np
import pytest

from jaxbrain import cli
from jaxbrain.data import kaggle3m
from jaxbrain.localize.predict import RunError, load_run, predict
from jaxbrain.train import TrainConfig, train_and_evaluate

TINY = dict(image_size=32, batch_size=4, init='scratch', epochs=1, bootstrap_samples=0, head_hidden=(32, 16))


@pytest.fixture(scope='module')
def runs(phantom_png, tmp_path_factory):
  workdir = tmp_path_factory.mktemp('runs')
  train_and_evaluate(TrainConfig(experiment='cls', data_dir=str(phantom_png), workdir=str(workdir), learning_rate=0.01,
                                 **TINY), progress=False)
  seg = train_and_evaluate(TrainConfig(experiment='seg', task='segment', arch='resunet', unet_width=4, optimizer='adam',
                                       learning_rate=1e-3, preprocess='resize_flip', data_dir=str(phantom_png),
                                       workdir=str(workdir), **TINY), progress=False)
  for key in ('dice_per_volume', 'iou_per_volume', 'dice_tumor_slices', 'false_positive_rate'):
    assert 0 <= seg[key] <= 1
  run = lambda name: next((workdir / name).iterdir())
  assert list((run('seg') / 'overlays').glob('*.png'))
  assert list((run('cls') / 'gradcam').glob('*.png'))
  return run('cls'), run('seg')


def test_predict_writes_every_output(runs, phantom_png, tmp_path):
  classifier, segmenter = runs
  out = tmp_path / 'out'
  assert cli.main(['predict', str(phantom_png), '--run', str(classifier), '--seg-run', str(segmenter), '--out', str(out),
                   '--no-progress']) == 0
  records = kaggle3m.scan(phantom_png)
  with open(out / 'predictions.csv') as f:
    rows = list(csv.DictReader(f))
  assert [r['path'] for r in rows] == sorted(str(r.image_path) for r in records)  # masks are not inputs
  assert list(rows[0]) == ['path', 'patient', 'slice', 'probability', 'label', 'tumor_pixels']
  assert all(0 <= float(r['probability']) <= 1 and r['label'] in ('0', '1') for r in rows)
  summary = json.loads((out / 'summary.json').read_text())
  assert set(summary) == {r.patient for r in records}
  for patient, entry in summary.items():
    mine = [r for r in rows if r['patient'] == patient]
    assert entry['slices'] == len(mine)
    assert sorted(entry['slices_with_tumor']) == sorted(int(r['slice']) for r in mine if r['label'] == '1')
    assert entry['volume_voxels'] == sum(int(r['tumor_pixels']) for r in mine)
    assert entry['tumor_area_pixels'] == {r['slice']: int(r['tumor_pixels']) for r in mine}
  stem = records[0].image_path.stem
  mask = kaggle3m.read_mask(out / 'masks' / f'{stem}_mask.png')
  assert mask.sum() == int(rows[0]['tumor_pixels'])
  assert (out / 'overlays' / f'{stem}_overlay.png').is_file()


def test_classifier_alone_gives_gradcam_overlays(runs, phantom_png, tmp_path):
  classifier, _ = runs
  one = kaggle3m.scan(phantom_png)[3].image_path
  summary = predict([one], classifier, tmp_path / 'out', progress=False)
  assert sum(p['slices'] for p in summary.values()) == 1
  assert (tmp_path / 'out' / 'overlays' / f'{one.stem}_overlay.png').is_file()
  assert not (tmp_path / 'out' / 'masks').exists()
  with open(tmp_path / 'out' / 'predictions.csv') as f:
    assert 'tumor_pixels' not in next(csv.DictReader(f))


def test_errors(runs, phantom_png, tmp_path, capsys):
  classifier, segmenter = runs
  with pytest.raises(RunError, match='is a segment run, but a classification run'):
    load_run(segmenter, 'classify')
  with pytest.raises(RunError, match='not a jaxbrain run directory'):
    load_run(tmp_path, 'classify')
  bad = shutil.copytree(phantom_png, tmp_path / 'bad')
  victim = kaggle3m.scan(bad)[0].image_path
  victim.write_bytes(b'garbage')
  before = sorted(p.name for p in victim.parent.iterdir())
  assert cli.main(['predict', str(bad), '--run', str(classifier), '--out', str(tmp_path / 'o'), '--no-progress']) == 2
  assert f'{victim.name}: not an image file' in capsys.readouterr().err
  assert not (tmp_path / 'o').exists()
  # never writes into the inputs
  assert cli.main(['predict', str(bad), '--run', str(classifier), '--out', str(victim.parent), '--no-progress']) == 2
  assert 'holds input files' in capsys.readouterr().err
  assert sorted(p.name for p in victim.parent.iterdir()) == before
  assert cli.main(['predict', str(tmp_path / 'nothing'), '--run', str(classifier), '--out', str(tmp_path / 'o')]) == 2
