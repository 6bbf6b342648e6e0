"""`python -m experiments.radiogenomics` on phantom patients with subtype codes drawn at random."""
import csv
import json
import shutil

import numpy as np

from jaxbrain.data.clinical import COLUMNS, GENOMIC_CLUSTERS, PATIENT
from jaxbrain.shape import FEATURES

from experiments import radiogenomics


def _with_random_subtypes(phantom, folder):
  """A copy of the phantom whose data.csv gives each patient cluster codes 1-2 drawn at random."""
  data = shutil.copytree(phantom, folder)
  with open(data / 'data.csv', newline='') as f:
    patients = [row[PATIENT] for row in csv.DictReader(f)]
  rng = np.random.default_rng(0)
  with open(data / 'data.csv', 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow([PATIENT, *COLUMNS])
    for patient in patients:
      writer.writerow([patient] + [int(rng.integers(1, 3)) if c in GENOMIC_CLUSTERS else '' for c in COLUMNS])
  return data, patients


def test_the_experiment_writes_its_table_features_plots_and_page(phantom_tif, tmp_path, capsys):
  """Every feature against every cluster column once, each patient's features once, the plots and
  the page; the subtypes were drawn independently of the images, so nothing passes Bonferroni.
  Catches a hypothesis left out or counted twice (a wrong threshold), a patient missing."""
  data, patients = _with_random_subtypes(phantom_tif, tmp_path / 'kaggle_3m')
  out = tmp_path / 'out'
  assert radiogenomics.main(['--data-dir', str(data), '--out', str(out)]) == 0
  tests = json.loads((out / 'associations.json').read_text())
  assert {(t['feature'], t['subtype']) for t in tests['tests']} == {(f, s) for f in FEATURES for s in GENOMIC_CLUSTERS}
  assert tests['threshold'] == 0.05 / (len(FEATURES) * len(GENOMIC_CLUSTERS))
  assert not any(t['significant'] for t in tests['tests'])
  with open(out / 'features.csv', newline='') as f:
    assert sorted(row['patient'] for row in csv.DictReader(f)) == sorted(patients)
  assert (out / 'features_by_subtype_true.png').stat().st_size > 0
  page = (out / 'report.html').read_text()
  assert 'Buda et al. 2019' in page and 'Research use only' in page
  assert 'Bonferroni threshold' in capsys.readouterr().out
