"""Spark batch scoring (local[2]) gives the same rows as `jaxbrain predict`; bad files become error rows."""
import csv
import shutil

import numpy as np

import pytest

pytest.importorskip('pyspark', reason='pip install -e ".[spark]"')
if shutil.which('java') is None:
  pytest.skip('Spark needs Java (.ci/run installs it)', allow_module_level=True)

from jaxbrain import spark as jspark  # noqa: E402
from jaxbrain.data import kaggle3m  # noqa: E402
from jaxbrain.localize.predict import predict  # noqa: E402
from tests.localize.helpers import lone_tumor_patient, store_gate, with_mask_rule  # noqa: E402


@pytest.mark.slow
def test_spark_scores_match_predict(trained_runs, phantom_png, tmp_path, recwarn):
  """Catches: rows that differ from `jaxbrain predict`'s (probability, label, tumor pixels,
  identity), a bad file that fails the job instead of giving an error row, masks post-processed
  without the patient's whole stack (the segmenter's rule removes tumors seen on one slice only,
  which batches of files that split a patient would get wrong), and a warning of Spark's own about
  how jaxbrain calls it printed to the user as the job's ("Cannot infer the eval type from type
  hints")."""
  classifier, segmenter = trained_runs
  segmenter = with_mask_rule(segmenter, tmp_path / 'seg', drop_single_slice=True)
  store_gate(classifier, segmenter, None)  # masks ungated: the tiny classifier would empty most of them
  tree = shutil.copytree(phantom_png, tmp_path / 'scans')
  lone = lone_tumor_patient(phantom_png, tree)
  lone_slices = [p for p in lone.iterdir() if not p.stem.endswith('_mask')]
  predict([tree], classifier, tmp_path / 'predict', seg_run_dir=segmenter, progress=False)
  with open(tmp_path / 'predict' / 'predictions.csv') as f:
    expected = {row['path']: row for row in csv.DictReader(f)}
  bad = next(p for p in tree.iterdir() if p.is_dir()) / 'broken_scan.png'
  bad.write_bytes(b'not a png')
  assert jspark.main([str(tree), '--run', str(classifier), '--seg-run', str(segmenter),
                      '--out', str(tmp_path / 'scores.parquet'), '--master', 'local[2]']) == 0
  assert [str(w.message) for w in recwarn if 'pyspark' in w.filename] == []  # the job prints warnings to its user
  import pandas as pd
  table = pd.read_parquet(tmp_path / 'scores.parquet')
  table['path'] = table['path'].str.replace('file:', '', n=1)
  assert len(table) == len(kaggle3m.scan(phantom_png)) + len(lone_slices) + 1
  broken = table[table['path'] == str(bad)].iloc[0]
  assert 'not an image file' in broken['error'] and pd.isna(broken['probability'])
  scored = table[table['error'].isna()]
  assert set(scored['path']) == set(expected)
  for _, row in scored.iterrows():
    want = expected[row['path']]
    assert row['probability'] == pytest.approx(float(want['probability']), abs=1e-6)
    assert int(row['label']) == int(want['label']) and int(row['tumor_pixels']) == int(want['tumor_pixels'])
    assert (row['patient'], int(row['slice'])) == (want['patient'], int(want['slice']))
  last = max(lone_slices, key=lambda p: int(p.stem.rsplit('_', 1)[1]))
  assert int(scored[scored['path'] == str(last)].iloc[0]['tumor_pixels']) == 0  # its tumor, on one slice, removed
  # the segmenter works on phantom scans it never saw: tumor slices come back with tumor pixels
  has_tumor = {str(r.image_path): kaggle3m.read_mask(r.mask_path).any() for r in kaggle3m.scan(tree)}
  found = [int(row['tumor_pixels']) > 0 for _, row in scored.iterrows()
           if has_tumor[row['path']] and lone.name not in row['path']]
  assert len(found) > 0 and np.mean(found) >= 0.8
