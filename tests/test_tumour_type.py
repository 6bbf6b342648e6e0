"""Tumour type from shape (`jaxbrain.tumour_type`): the fit, the folds, the figures, the saved model."""
import numpy as np
import pytest

from jaxbrain import tumour_type
from jaxbrain.data.clinical import ClinicalTable
from jaxbrain.errors import UserError
from jaxbrain.shape import ShapeFeatures


def _shapes(n, seed=0):
  rng = np.random.default_rng(seed)
  return {f'TCGA_XX_{i:04d}': ShapeFeatures(int(rng.integers(50, 5000)), None, int(rng.integers(1, 20)), 0,
                                            int(rng.integers(20, 900)), int(rng.integers(1, 4)),
                                            float(rng.uniform(0.03, 0.2)), float(rng.uniform(0.02, 0.15)),
                                            float(rng.uniform(0.2, 0.7))) for i in range(n)}


def test_the_fit_is_the_penalized_likelihoods_optimum():
  """The gradient of the L2-penalized log-likelihood is zero at the fitted weights (the intercept
  unpenalized). Catches a missing penalty, a penalized intercept, Newton's steps stopped early."""
  rng = np.random.default_rng(1)
  x = rng.normal(size=(60, 3))
  y = (x[:, 0] + rng.normal(size=60) > 0).astype(float)
  model = tumour_type.fit(x, y, l2=2.0)
  z = (x - model.mean) / model.scale
  p = model.probability(x)
  assert np.allclose(z.T @ (p - y) + 2.0 * model.weights, 0, atol=1e-8)
  assert abs(np.sum(p - y)) < 1e-8


def test_a_missing_feature_takes_the_training_median():
  """Catches NaN propagated into a probability (a patient without tumour would get none)."""
  x = np.array([[1.0, 2.0], [2.0, np.nan], [3.0, 6.0], [4.0, 8.0]])
  model = tumour_type.fit(x, np.array([0.0, 0.0, 1.0, 1.0]))
  assert model.median.tolist() == [2.5, 6.0]
  assert np.isfinite(model.probability(np.array([[np.nan, np.nan]]))).all()


def test_no_patient_is_in_its_own_models_training_data(monkeypatch):
  """Every out-of-fold probability comes from a model whose training rows exclude the patient, in
  every fold of every repeat. Catches a fold that trains on all patients, or on its own held-out ones."""
  x = np.arange(40, dtype=float)[:, None] * [1.0, -1.0]  # row i is recognisable by its value i
  y = (np.arange(40) % 3 == 0).astype(float)
  fitted = []
  original = tumour_type.fit

  def recording_fit(features, labels, l2=tumour_type.L2):
    model = original(features, labels, l2)
    trained_on = set(features[:, 0].astype(int))
    fitted.append(trained_on)
    return CheckedModel(model, trained_on)

  class CheckedModel:
    def __init__(self, model, trained_on):
      self.model, self.trained_on = model, trained_on

    def probability(self, features):
      assert not set(features[:, 0].astype(int)) & self.trained_on
      return self.model.probability(features)

  monkeypatch.setattr(tumour_type, 'fit', recording_fit)
  found = tumour_type.cross_validated(x, y, repeats=3, folds=5)
  assert len(fitted) == 15 and all(30 <= len(t) <= 34 for t in fitted)
  assert np.isfinite(found).all()


def test_the_folds_keep_each_class_spread_over_them():
  """Stratified: 10 positives in 5 folds put 2 in each. Catches a fold without positives (its AUC
  undefined), which plain shuffling often gives with 19 positives in 80."""
  labels = np.array([1] * 10 + [0] * 30)
  folds = tumour_type.stratified_folds(labels, 5, np.random.default_rng(0))
  assert [int(labels[folds == k].sum()) for k in range(5)] == [2] * 5


def test_labels_drawn_independently_of_the_shapes_give_no_signal():
  """Labels drawn at random beside random shapes: the permutation p-value is not small and the
  interval covers 0.5. Catches figures that leak the labels (AUC far above 0.5 on noise) and a
  permutation test that compares against the wrong statistic."""
  patients, x = tumour_type.patient_matrix(_shapes(60))
  y = (np.random.default_rng(5).uniform(size=60) < 0.35).astype(float)
  figures = tumour_type.score(x, y, repeats=3, permutations=100, bootstrap=300)
  assert figures['permutation_p'] > 0.05
  assert figures['confidence_95'][0] < 0.5 < figures['confidence_95'][1]


def test_a_real_signal_is_found():
  """Labels that follow the margin fluctuation: ROC AUC high, permutation p at its floor. Catches
  a model that ignores the features."""
  shapes = _shapes(60)
  patients, x = tumour_type.patient_matrix(shapes)
  y = (x[:, tumour_type.FEATURE_NAMES.index('margin_fluctuation')] > 0.08).astype(float)
  figures = tumour_type.score(x, y, repeats=2, permutations=50, bootstrap=200)
  assert figures['roc_auc'] > 0.9 and figures['permutation_p'] == pytest.approx(1 / 51)


def test_a_saved_model_applied_gives_the_probabilities_it_was_fitted_with(tmp_path):
  """train -> save -> load -> apply equals the fitted models' own probabilities on the same
  patients. Catches a model saved without its standardization or medians, or features reordered."""
  shapes = _shapes(30)
  rows = {p: {'COCCluster': 1 + (i % 3 == 0), 'neoplasm_histologic_grade': 1 + (i % 2), 'histological_type': 1 + i % 3,
              'RNASeqCluster': 1 + i % 4} for i, p in enumerate(sorted(shapes))}
  model = tumour_type.train(shapes, ClinicalTable(None, rows), 'true masks', repeats=1, permutations=2)
  tumour_type.save(model, tmp_path / 'type_model.json')
  applied = tumour_type.apply(tumour_type.load(tmp_path / 'type_model.json'), shapes)
  patients, x = tumour_type.patient_matrix(shapes)
  for target in tumour_type.TARGETS:
    y = target.labels(ClinicalTable(None, rows), patients)
    expected = tumour_type.fit(x, y).probability(x)
    assert [applied[p][target.name] for p in patients] == pytest.approx(expected.tolist(), rel=1e-12)


def test_a_model_of_another_format_is_refused_naming_the_file(tmp_path):
  path = tmp_path / 'type_model.json'
  path.write_text('{"format": 99}')
  with pytest.raises(UserError, match='type_model.json: a type model of another format'):
    tumour_type.load(path)
