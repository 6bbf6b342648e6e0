import numpy as np
import pytest

from jaxbrain.data import (check_disjoint, make_split, patient_folds, patient_kfold, patient_split, slice_split,
                           split_record)
from jaxbrain.data.splits import Split


def toy(n_patients=20, seed=0, tumor_free=2):
  rng = np.random.default_rng(seed)
  patients, labels = [], []
  for p in range(n_patients):
    n = int(rng.integers(10, 30))
    patients += [f'P{p:03d}'] * n
    # a few patients without any tumor slice, the rest ~35% tumor
    labels += list(rng.random(n) < (0 if p < tumor_free else 0.35))
  return np.array(patients), np.array(labels, np.int32)


def patient_sets(split, patients):
  return [set(patients[part]) for part in (split.train, split.validation, split.test)]


def test_slice_split_keeps_the_reports_test_slices_and_carves_validation():
  split = slice_split(1000, 0.15, seed=3)
  assert (len(split.train), len(split.validation), len(split.test)) == (700, 150, 150)
  assert len(set(split.train) | set(split.validation) | set(split.test)) == 1000
  np.testing.assert_array_equal(split.test, slice_split(1000, 0.15, seed=3).test)
  # test is the report's 15% of a random permutation (the same slices as the 85/15 split had)
  order = np.random.default_rng(3).permutation(1000)
  np.testing.assert_array_equal(split.test, np.sort(order[:150]))
  assert not np.array_equal(split.test, slice_split(1000, 0.15, seed=4).test)


def test_slice_split_leaks_patients():
  """Why the patient split exists: the report's slice split shares patients between sides."""
  patients, labels = toy()
  split = slice_split(len(labels))
  assert set(patients[split.train]) & set(patients[split.test])
  with pytest.raises(ValueError, match='on both the train and the'):
    check_disjoint(split, patients)


@pytest.mark.parametrize('n_patients', [4, 7, 20, 80])
def test_patient_split_is_70_15_15_disjoint_with_tumors_on_every_side(n_patients):
  patients, labels = toy(n_patients, tumor_free=1)
  for seed in range(4):
    split = patient_split(patients, labels, seed=seed)
    train, validation, test = patient_sets(split, patients)
    assert not train & validation and not train & test and not validation & test
    assert len(split.train) + len(split.validation) + len(split.test) == len(labels)
    for part in (split.train, split.validation, split.test):
      assert labels[part].any()
    held_out = max(1, round(0.15 * n_patients)) if n_patients > 4 else 1
    assert len(validation) == len(test) == held_out
    check_disjoint(split, patients)
  np.testing.assert_array_equal(patient_split(patients, labels, seed=1).test, patient_split(patients, labels, seed=1).test)


def test_patient_split_is_stratified_by_tumor_burden():
  """Catches an unstratified draw: over 80 patients ordered by tumor-slice count, systematic
  sampling puts exactly one held-out patient in each sixth of that order (a random draw of 12
  leaves some sixth empty for most seeds)."""
  patients, labels = toy(80, tumor_free=0)
  counts = {p: labels[patients == p].sum() for p in np.unique(patients)}
  rank = {p: r for r, p in enumerate(sorted(counts, key=lambda p: (counts[p], p)))}
  for seed in range(5):
    split = patient_split(patients, labels, seed=seed)
    for part in (split.validation, split.test):
      sixths = sorted(rank[p] * 6 // 80 for p in set(patients[part]))
      assert set(sixths) == set(range(6)), sixths


def test_kfold_test_folds_cover_every_patient_once_and_validation_is_carved_from_the_rest():
  patients, labels = toy()
  folds = patient_folds(patients, labels, k=5, seed=0)
  assert sorted(np.concatenate(folds)) == sorted(np.unique(patients))
  for fold in range(5):
    split = patient_kfold(patients, labels, fold, k=5, seed=0)
    train, validation, test = patient_sets(split, patients)
    assert test == set(folds[fold])
    assert len(validation) == 3 and not validation & test and not train & (validation | test)
    assert labels[split.validation].any() and labels[split.test].any()
  assert make_split('patient', patients, labels, fold=2).test.tolist() == patient_kfold(patients, labels, 2).test.tolist()


def test_split_record_names_patients_and_slices():
  patients, labels = toy()
  slices = np.concatenate([np.arange(1, (patients == p).sum() + 1) for p in np.unique(patients)])
  split = patient_split(patients, labels)
  record = split_record(split, 'patient', 0, None, 'abc', patients, slices)
  assert set(record) == {'kind', 'seed', 'fold', 'data_fingerprint', 'train', 'validation', 'test'}
  assert record['test'] == sorted(set(patients[split.test]))
  slice_record = split_record(slice_split(len(labels)), 'slice', 0, None, 'abc', patients, slices)
  assert 'leak' in slice_record['note'] and slice_record['test'][0].startswith('P0')
  assert len(slice_record['test']) == len(slice_split(len(labels)).test)


def test_check_disjoint_catches_a_shared_patient():
  patients = np.array(['a', 'a', 'b', 'c'])
  with pytest.raises(ValueError, match='patient a is on both the train and the test side'):
    check_disjoint(Split(np.array([0]), np.array([2]), np.array([1, 3])), patients)


def test_bad_requests():
  patients, labels = toy()
  with pytest.raises(ValueError, match='unknown split'):
    make_split('random', patients, labels)
  with pytest.raises(ValueError, match='fold must be in'):
    make_split('patient', patients, labels, fold=5, num_folds=5)
  with pytest.raises(ValueError, match='no tumor slice'):
    patient_split(patients, np.zeros_like(labels))
  with pytest.raises(ValueError, match='at least 3 patients'):
    patient_split(patients[:20], labels[:20])


def test_ensemble_members_hold_out_the_decision_set_and_never_see_the_test_patients():
  """Catches a member that trains or selects on the seed's validation patients (the ensemble's
  decision set), one that sees the seed's test patients at all, members whose held-out folds
  overlap or miss a training patient, a split.json that does not name the seed's test patients
  (its ensemble's test figures belong to them), and --member combined with --fold or the slice split."""
  patients, labels = toy(n_patients=40)
  seeds = patient_split(patients, labels, seed=0)
  training, decision, test = patient_sets(seeds, patients)
  held_out = []
  for member in range(5):
    split = make_split('patient', patients, labels, member=member, seed=0)
    train, validation, scored = patient_sets(split, patients)
    assert scored == decision and train | validation == training and not train & validation
    assert not (train | validation | scored) & test
    held_out.append(validation)
  assert sorted(p for fold in held_out for p in fold) == sorted(training)
  record = split_record(split, 'patient', 0, None, 'f', patients, np.zeros(len(patients)), member=4,
                        seed_test=seeds.test)
  assert record['member'] == 4 and set(record['seed_test']) == test and set(record['test']) == decision
  for bad in ({'member': 1, 'fold': 1}, {'member': 5}):
    with pytest.raises(ValueError, match='member'):
      make_split('patient', patients, labels, **bad)
  with pytest.raises(ValueError, match='member'):
    make_split('slice', patients, labels, member=0)
