"""Shape against subtype (`jaxbrain.radiogenomics`): the exact test, the table, the out-of-fold masks."""
import itertools
import json
import math
import shutil

import numpy as np
import pytest
from scipy import stats

from jaxbrain import radiogenomics
from jaxbrain.data.clinical import ClinicalTable
from jaxbrain.shape import ShapeFeatures


def _brute_force(table):
  """The exact k x 2 p-value by listing every first column with the table's margins."""
  table = np.asarray(table)
  rows, first = table.sum(1), table[:, 0].sum()
  def probability(column):
    return math.prod(math.comb(r, x) for r, x in zip(rows, column)) / math.comb(rows.sum(), first)
  observed = probability(table[:, 0])
  columns = [c for c in itertools.product(*(range(r + 1) for r in rows)) if sum(c) == first]
  return sum(p for p in map(probability, columns) if p <= observed * (1 + 1e-7))


@pytest.mark.parametrize('table', [[[3, 9], [8, 2]], [[10, 0], [0, 10]], [[5, 5], [5, 5]], [[0, 4], [7, 1]]])
def test_the_exact_test_is_fishers_on_two_by_two_tables(table):
  """Catches a one-sided sum, a p-value over 1, ties with the observed table left out."""
  assert radiogenomics.exact_test(table) == pytest.approx(stats.fisher_exact(table).pvalue, rel=1e-9)


@pytest.mark.parametrize('table', [[[4, 1], [2, 6], [3, 3]], [[6, 0], [1, 5], [0, 2], [3, 3]]])
def test_the_exact_test_on_k_by_two_tables_sums_every_table_no_more_probable(table):
  """Against a brute-force listing of every table with the margins. Catches rows combined wrongly
  or tables pruned before their column sum is reached."""
  assert radiogenomics.exact_test(table) == pytest.approx(_brute_force(table), rel=1e-9)


def test_a_table_that_is_not_k_by_two_is_refused():
  """Catches a 2 x 3 table read as three rows of two (a p-value of another question)."""
  with pytest.raises(ValueError, match='k x 2'):
    radiogenomics.exact_test([[1, 2, 3], [4, 5, 6]])


def _features(values):
  return {p: ShapeFeatures(1, None, 1, 0, 1, 1, v, v, v) for p, v in values.items()}


def test_associate_splits_at_the_median_and_leaves_out_missing_patients():
  """Six patients, one without a tumour (None) and one without a subtype (None): the four left are
  split at their own median. Catches a median taken over every patient, a missing value counted as
  a category, NaN passed into the test."""
  values = {'P1': 0.1, 'P2': 0.2, 'P3': 0.3, 'P4': 0.4, 'P5': None, 'P6': 0.9}
  rows = {'P1': {'RNASeqCluster': 1}, 'P2': {'RNASeqCluster': 1}, 'P3': {'RNASeqCluster': 2},
          'P4': {'RNASeqCluster': 2}, 'P5': {'RNASeqCluster': 1}, 'P6': {'RNASeqCluster': None}}
  [found] = radiogenomics.associate(_features(values), ClinicalTable(None, rows), ['margin_fluctuation'],
                                    ['RNASeqCluster'])
  assert (found.patients, found.categories, found.table) == (4, (1, 2), ((2, 0), (0, 2)))
  assert found.p == pytest.approx(stats.fisher_exact([[2, 0], [0, 2]]).pvalue)


def _run_with_split(folder, train, held_out):
  folder.mkdir(parents=True)
  (folder / 'split.json').write_text(json.dumps({'train': train, 'validation': held_out, 'test': []}))
  return folder


def test_each_patient_gets_a_run_that_never_trained_on_it(tmp_path):
  """Five fold runs over ten patients: every patient's run holds it out. Catches the first run
  taken for everyone (it trained on eight of them)."""
  patients = [f'TCGA_XX_{i:04d}' for i in range(10)]
  runs = [_run_with_split(tmp_path / f'fold{k}', [p for i, p in enumerate(patients) if i // 2 != k],
                          patients[2 * k:2 * k + 2]) for k in range(5)]
  chosen = radiogenomics.out_of_fold_runs(runs, patients)
  for patient, run in chosen.items():
    assert patient not in json.loads((run / 'split.json').read_text())['train']
  assert len(set(chosen.values())) == 5


def test_a_patient_every_run_trained_on_is_refused_by_name(tmp_path):
  """Catches an automatic mask made by a model that trained on the patient."""
  runs = [_run_with_split(tmp_path / f'run{k}', ['TCGA_XX_0001', 'TCGA_XX_0002'], []) for k in range(2)]
  with pytest.raises(radiogenomics.RadiogenomicsError, match='TCGA_XX_0001: every run given trained on it'):
    radiogenomics.out_of_fold_runs(runs, ['TCGA_XX_0001'])


@pytest.mark.slow
def test_automatic_masks_come_from_the_runs_predictions(trained_runs, phantom_runs_data, tmp_path):
  """The segmenter's held-out patients (a copy of their folders): each one's mask volume is the
  predict output's masks stacked in slice order, and the run that made it is named; a training
  patient added to the folder is refused. Catches masks stacked out of order or from another
  patient."""
  seg = trained_runs[1]
  split = json.loads((seg / 'split.json').read_text())
  data = tmp_path / 'kaggle_3m'
  data.mkdir()
  for folder in phantom_runs_data.iterdir():
    if folder.is_dir() and folder.name.rsplit('_', 1)[0] in split['validation'] + split['test']:
      shutil.copytree(folder, data / folder.name)
  masks, made_by = radiogenomics.automatic_masks([seg], data, tmp_path / 'auto')
  assert set(masks) == set(split['validation'] + split['test']) and set(made_by.values()) == {seg}
  from jaxbrain.data import kaggle3m
  for patient, volume in masks.items():
    folder = next(data.glob(f'{patient}_*'))
    output = tmp_path / 'auto' / seg.name / 'masks'
    expected = [kaggle3m.read_mask(output / f'{folder.name}_{k}_mask.png') for k in range(1, volume.shape[0] + 1)]
    np.testing.assert_array_equal(volume, np.stack(expected).astype(bool))
  trained = next(f for f in phantom_runs_data.iterdir() if f.is_dir() and f.name.rsplit('_', 1)[0] in split['train'])
  shutil.copytree(trained, data / trained.name)
  with pytest.raises(radiogenomics.RadiogenomicsError, match='every run given trained on it'):
    radiogenomics.automatic_masks([seg], data, tmp_path / 'auto2')


def test_feature_agreement_compares_the_patients_both_sets_describe():
  """Automatic features twice the true ones (a perfect correlation, every patient on the same side
  of its median) and one patient without an automatic shape: left out. Catches patients paired out
  of order or a missing shape counted as 0."""
  values = {f'P{i}': 0.1 * i for i in range(1, 7)}
  true = _features(values)
  automatic = _features({p: (2 * v if p != 'P3' else None) for p, v in values.items()})
  [row] = radiogenomics.feature_agreement(true, automatic, ['margin_fluctuation'])
  assert row['patients'] == 5 and row['correlation'] == pytest.approx(1.0)
  assert row['same_side_of_median'] == 1.0 and row['median_automatic'] == pytest.approx(2 * row['median_true'])
