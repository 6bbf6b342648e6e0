"""Tumour type from shape and intensity (`jaxbrain.tumour_type`): the fit, the folds, the figures, the saved model."""
import numpy as np
import pytest

from jaxbrain import intensity, tumour_type
from jaxbrain.data.clinical import ClinicalTable
from jaxbrain.errors import UserError
from jaxbrain.shape import ShapeFeatures


def _shapes(n, seed=0):
  rng = np.random.default_rng(seed)
  return {f'TCGA_XX_{i:04d}': ShapeFeatures(int(rng.integers(50, 5000)), None, int(rng.integers(1, 20)), 0,
                                            int(rng.integers(20, 900)), int(rng.integers(1, 4)),
                                            float(rng.uniform(0.03, 0.2)), float(rng.uniform(0.02, 0.15)),
                                            float(rng.uniform(0.2, 0.7))) for i in range(n)}


def _intensities(shapes, seed=1):
  rng = np.random.default_rng(seed)
  return {p: {name: (None if rng.uniform() < 0.1 else float(rng.uniform(0.5, 2))) for name in intensity.FEATURE_NAMES}
          for p in shapes}


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


@pytest.mark.parametrize('feature_set', list(tumour_type.FEATURE_SETS))
def test_labels_drawn_independently_of_the_features_give_no_signal(feature_set):
  """Labels drawn at random beside random shapes and intensities: the permutation p-value is not
  small and the interval covers 0.5, for each feature set. Catches figures that leak the labels
  (AUC far above 0.5 on noise) and a permutation test that compares against the wrong statistic."""
  shapes = _shapes(60)
  patients, x = tumour_type.patient_matrix(shapes, _intensities(shapes), tumour_type.FEATURE_SETS[feature_set])
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


@pytest.mark.parametrize('feature_set', list(tumour_type.FEATURE_SETS))
def test_a_saved_model_applied_gives_the_probabilities_it_was_fitted_with(tmp_path, feature_set):
  """train -> save -> load -> apply equals the fitted models' own probabilities on the same
  patients, for each feature set. Catches a model saved without its standardization or medians,
  features reordered, or a model applied to another feature set than it was fitted on."""
  shapes, names = _shapes(30), tumour_type.FEATURE_SETS[feature_set]
  intensities = _intensities(shapes)
  rows = {p: {'COCCluster': 1 + (i % 3 == 0), 'neoplasm_histologic_grade': 1 + (i % 2), 'histological_type': 1 + i % 3,
              'RNASeqCluster': 1 + i % 4} for i, p in enumerate(sorted(shapes))}
  model = tumour_type.train(shapes, ClinicalTable(None, rows), 'true masks', repeats=1, permutations=2,
                            intensities=intensities, names=names)
  tumour_type.save(model, tmp_path / 'type_model.json')
  applied = tumour_type.apply(tumour_type.load(tmp_path / 'type_model.json'), shapes, intensities)
  patients, x = tumour_type.patient_matrix(shapes, intensities, names)
  assert x.shape[1] == len(names)
  for target in tumour_type.TARGETS:
    y = target.labels(ClinicalTable(None, rows), patients)
    expected = tumour_type.fit(x, y).probability(x)
    assert [applied[p][target.name] for p in patients] == pytest.approx(expected.tolist(), rel=1e-12)


def test_a_model_of_another_format_is_refused_naming_the_file(tmp_path):
  """Catches a model of another feature set applied with its weights to the wrong features."""
  path = tmp_path / 'type_model.json'
  path.write_text('{"format": 99}')
  with pytest.raises(UserError, match='type_model.json: a type model of another format'):
    tumour_type.load(path)


def test_type_slices_keep_the_tumour_slices_labelled_with_their_patients_answer():
  """Three patients (codes 2, 1, missing), each with tumour and tumour-free slices: only the first
  two patients' tumour slices stay, labelled 1 and 0. Catches tumour-free slices kept, the slice's
  tumour label kept, a patient without a code guessed."""
  from jaxbrain.data.arrays import SliceArrays
  patient = np.array(['TCGA_XX_0001'] * 3 + ['TCGA_XX_0002'] * 3 + ['TCGA_XX_0003'] * 2)
  label = np.array([0, 1, 1, 1, 0, 1, 1, 1], np.int32)
  n = len(patient)
  data = SliceArrays(np.zeros((n, 4, 4, 3), np.uint8), np.zeros((n, 4, 4), np.uint8), label, patient,
                     np.array(['XX'] * n), np.arange(n, dtype=np.int32), np.array([f's{i}' for i in range(n)]))
  rows = {'TCGA_XX_0001': {'COCCluster': 2}, 'TCGA_XX_0002': {'COCCluster': 1}, 'TCGA_XX_0003': {'COCCluster': None}}
  kept = tumour_type.type_slices(data, ClinicalTable(None, rows), 'coc2')
  assert kept.path.tolist() == ['s1', 's2', 's3', 's5'] and kept.label.tolist() == [1, 1, 0, 0]


def test_out_of_fold_figures_permute_the_labels_against_fixed_probabilities():
  """Probabilities that rank every positive first: AUC 1 and the permutation p at its floor; the same
  probabilities against shuffled labels: p not small. Catches a p-value computed on the wrong side."""
  labels = np.array([1.0] * 10 + [0.0] * 20)
  probability = np.linspace(1, 0, 30)
  found = tumour_type.out_of_fold_figures(labels, probability, permutations=200, bootstrap=200)
  assert found['roc_auc'] == 1.0 and found['permutation_p'] == pytest.approx(1 / 201)
  shuffled = np.random.default_rng(3).permutation(labels)
  assert tumour_type.out_of_fold_figures(shuffled, probability, permutations=200, bootstrap=200)['permutation_p'] > 0.05



def test_models_together_average_each_patients_own_probabilities():
  """Two parts that list their patients in different orders, one with a patient the other lacks and
  one patient without a code: the mean is taken patient by patient over the patients both scored,
  the uncoded one left out. Catches probabilities averaged by position, or a patient one part never
  scored kept."""
  rows = {f'TCGA_XX_000{k}': {'COCCluster': code} for k, code in enumerate((2, 1, 2, 1, None, 1))}
  image = {'patient_ids': ['TCGA_XX_0000', 'TCGA_XX_0001', 'TCGA_XX_0002', 'TCGA_XX_0003', 'TCGA_XX_0004'],
           'out_of_fold': [0.9, 0.2, 0.3, 0.4, 0.5]}
  shape = {'patient_ids': ['TCGA_XX_0003', 'TCGA_XX_0002', 'TCGA_XX_0001', 'TCGA_XX_0000', 'TCGA_XX_0004',
                           'TCGA_XX_0005'], 'out_of_fold': [0.0, 0.9, 0.4, 0.7, 0.5, 0.6]}
  found = tumour_type.together(ClinicalTable(None, rows), 'coc2', image, shape, permutations=10, bootstrap=10)
  assert found['patient_ids'] == ['TCGA_XX_0000', 'TCGA_XX_0001', 'TCGA_XX_0002', 'TCGA_XX_0003']
  assert found['out_of_fold'] == pytest.approx([0.8, 0.3, 0.6, 0.2]) and found['positives'] == 2
  assert found['roc_auc'] == 1.0

def test_a_type_target_needs_the_real_data_and_a_classifier():
  """Catches a type model trained on the phantom (no codes) or asked of a segmenter."""
  from jaxbrain.config import Config
  from jaxbrain.errors import ConfigError
  with pytest.raises(ConfigError, match='--type-target coc2: a tumour-type model reads data.csv'):
    Config.from_flags(experiment='t', type_target='coc2')
  with pytest.raises(ConfigError, match='--type-target must be one of coc2'):
    Config.from_flags(experiment='t', type_target='grade', data_dir='/data')


def test_intensity_features_are_never_filled_in_for_a_patient_without_them():
  """A model of intensity features applied without the patients' intensities is refused. Catches
  every intensity feature silently taking the training median (the same probability for everyone)."""
  shapes = _shapes(3)
  with pytest.raises(ValueError, match='intensity features'):
    tumour_type.patient_matrix(shapes, None, tumour_type.FEATURE_SETS['shape and intensity'])
