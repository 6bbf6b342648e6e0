import numpy as np
import pytest

from jaxbrain.data import make_split, patient_kfold, patient_split, slice_split


def toy(n_patients=20, seed=0):
  rng = np.random.default_rng(seed)
  patients, labels = [], []
  for p in range(n_patients):
    n = int(rng.integers(10, 30))
    patients += [f'P{p:03d}'] * n
    # two patients without any tumor slice, the rest ~35% tumor
    labels += list(rng.random(n) < (0 if p < 2 else 0.35))
  return np.array(patients), np.array(labels, np.int32)


def test_slice_split_is_85_15_and_deterministic():
  split = slice_split(1000, 0.15, seed=3)
  assert len(split.eval) == 150 and len(split.train) == 850
  assert not set(split.train) & set(split.eval)
  np.testing.assert_array_equal(split.eval, slice_split(1000, 0.15, seed=3).eval)
  assert not np.array_equal(split.eval, slice_split(1000, 0.15, seed=4).eval)


def test_slice_split_leaks_patients():
  """Why the patient split exists: the report's slice split shares patients between sides."""
  patients, labels = toy()
  split = slice_split(len(labels))
  assert set(patients[split.train]) & set(patients[split.eval])


def test_patient_split_has_no_shared_patient_and_tumors_on_both_sides():
  patients, labels = toy()
  for seed in range(5):
    split = patient_split(patients, labels, 0.15, seed)
    assert not set(patients[split.train]) & set(patients[split.eval])
    assert len(split.train) + len(split.eval) == len(labels)
    assert labels[split.train].any() and labels[split.eval].any()
    assert len(set(patients[split.eval])) == 4  # round(0.15 * 18) = 3 tumor + max(round(0.15 * 2), 1) healthy
  np.testing.assert_array_equal(patient_split(patients, labels, seed=1).eval, patient_split(patients, labels, seed=1).eval)


def test_kfold_covers_every_patient_once():
  patients, labels = toy()
  folds = patient_kfold(patients, labels, k=5, seed=0)
  evals = np.concatenate([f.eval for f in folds])
  assert sorted(evals) == list(range(len(labels)))
  for fold in folds:
    assert not set(patients[fold.train]) & set(patients[fold.eval])
    assert labels[fold.eval].any()
  assert make_split('patient', patients, labels, fold=2, num_folds=5).eval.tolist() == folds[2].eval.tolist()


def test_bad_requests():
  patients, labels = toy()
  with pytest.raises(ValueError, match='unknown split'):
    make_split('random', patients, labels)
  with pytest.raises(ValueError, match='fold must be in'):
    make_split('patient', patients, labels, fold=5, num_folds=5)
  with pytest.raises(ValueError, match='no tumor slice'):
    patient_split(patients, np.zeros_like(labels))
