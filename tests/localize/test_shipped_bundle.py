"""The bundle this checkout ships (checkpoints/models/lgg-seg01), on the shared data: `predict` with
no model named, then `evaluate`, gives the test figures the bundle states (and the README quotes)."""
import json

import pytest

from jaxbrain import cli
from jaxbrain.bundle import shipped_bundle
from jaxbrain.localize.evaluate import evaluate


@pytest.mark.realdata
@pytest.mark.slow
def test_the_shipped_bundle_reproduces_its_stated_test_figures(real_data, tmp_path):
  """The 12 seed-0 test patients' folders predicted by the shipped bundle (no --model, --run or
  --seg-run) and evaluated against their masks: per-volume Dice, the false-positive rate, and the
  chosen detector's ROC AUC and accuracy equal model.json's test figures (measured by `jaxbrain gate`
  before export) to the three digits printed. Catches a bundle whose weights, mask rule or
  detector differ from the ensemble measured, a predict path that scores otherwise than gate's,
  and figures edited by hand."""
  folder = shipped_bundle()
  if not folder.model.is_file():
    pytest.skip(f'{folder}: no bundle shipped in this checkout')
  record = json.loads(folder.model.read_text())
  test = set(record['data']['patients']['test'])
  folders = sorted(d for d in real_data.iterdir() if d.is_dir() and d.name.rsplit('_', 1)[0] in test)
  assert len(folders) == len(test) == record['test']['patients']
  assert cli.main(['predict', *map(str, folders), '--out', str(tmp_path / 'pred'), '--no-progress']) == 0
  found = evaluate(tmp_path / 'pred', real_data, bootstrap_samples=0)
  stated = record['test']
  pairs = {'dice_per_volume': (found['segmentation']['dice_per_volume']['mean'], stated['segmenter']['dice_per_volume']),
           'false_positive_rate': (found['segmentation']['false_positive_rate'],
                                   stated['segmenter']['false_positive_rate']),
           'roc_auc': (found['detection']['roc_auc'], stated['detection']['chosen']['roc_auc']),
           'accuracy': (found['detection']['accuracy'], stated['detection']['chosen']['accuracy'])}
  assert {k: round(a, 3) for k, (a, _) in pairs.items()} == {k: round(b, 3) for k, (_, b) in pairs.items()}
