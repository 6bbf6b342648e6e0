"""What kind of tumour, predicted from its shape and intensity: patient-level models of grade,
histological type and genomic subtype (after Buda, AlBadawy, Saha, Mazurowski, Radiology: AI 2020,
who predicted cluster-of-clusters 2 against the rest from the images with a CNN) from the shape
features of `jaxbrain.shape` and the intensity features of `jaxbrain.intensity`, scored by
patient-level cross-validation.

The recipe, stated once before any run and not tuned (so no nested cross-validation): the features
of one of `FEATURE_SETS` (shape: `FEATURE_NAMES`, sizes on a log scale; intensity; or both in one
model, the intensity recipe stated before its figures); a feature a patient lacks (no tumour, a
flat one) takes the training patients' median; each feature standardized by the training patients'
mean and standard deviation; an L2-regularized logistic regression (`L2` on the weights, not the
intercept) fitted by Newton's method. Each target is one binary question (`TARGETS`: a code against
the rest of its column; a column of several codes is asked once per code); a patient whose code is
missing is left out of that target. The codes are data.csv's, which gives no legend.

Scored by stratified five-fold cross-validation over patients, repeated `REPEATS` times: each
patient's probability comes only from models that did not train on it (`cross_validated`;
tests/test_tumour_type.py fails if one did). Reported: the ROC AUC of the repeats' mean out-of-fold probability, the range over the
repeats, its 95% bootstrap interval over patients, and a permutation p-value (the whole
cross-validation rerun on shuffled labels).
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from jaxbrain import intensity
from jaxbrain.data.arrays import SliceArrays
from jaxbrain.data.clinical import ClinicalTable
from jaxbrain.errors import UserError
from jaxbrain.files import write_json
from jaxbrain.metrics import bootstrap_by_patient, roc_auc
from jaxbrain.shape import ShapeFeatures

FEATURE_NAMES = ('log_voxels', 'log_largest_slice_area', 'tumour_slices', 'pieces', 'angular_standard_deviation',
                 'margin_fluctuation', 'bounding_ellipsoid_volume_ratio')
FEATURE_SETS = {'shape': FEATURE_NAMES, 'intensity': intensity.FEATURE_NAMES,
                'shape and intensity': FEATURE_NAMES + intensity.FEATURE_NAMES}
APPLIED = 'shape and intensity'  # the best cross-validated set, from true and automatic masks: docs/radiogenomics.md
L2 = 1.0
FOLDS, REPEATS, PERMUTATIONS, BOOTSTRAP = 5, 10, 1000, 1000
FORMAT = 1
RESEARCH_ONLY = ('research use only: grade, histological type and genomic subtype are decided by pathology and '
                 'sequencing, not by a scan; cross-validated figures on 80 patients: docs/radiogenomics.md')


@dataclasses.dataclass(frozen=True)
class Target:
  """One question: is `column`'s code `positive` (against every other code)? `key` names it on the
  command line (`--type-target`), `name` in tables."""
  key: str
  name: str
  column: str
  positive: int

  def labels(self, clinical: ClinicalTable, patients: Sequence[str]) -> np.ndarray:
    """1 / 0 per patient, NaN where the code is missing."""
    codes = clinical.column(self.column, patients)
    return np.where(np.isnan(codes), np.nan, (codes == self.positive).astype(float))


TARGETS = (Target('coc2', 'cluster-of-clusters 2 vs rest', 'COCCluster', 2),
           Target('grade2', 'grade code 2 vs 1', 'neoplasm_histologic_grade', 2),
           *(Target(f'histology{k}', f'histological type {k} vs rest', 'histological_type', k) for k in (1, 2, 3)),
           *(Target(f'rnaseq{k}', f'RNASeq cluster {k} vs rest', 'RNASeqCluster', k) for k in (1, 2, 3, 4)))
TARGET_KEYS = tuple(t.key for t in TARGETS)


def target(key: str) -> Target:
  return next(t for t in TARGETS if t.key == key)


def type_slices(data: SliceArrays, clinical: ClinicalTable, key: str) -> SliceArrays:
  """What a tumour-type model (`--type-target key`) trains and is scored on: the tumour-bearing
  slices of the patients whose code is known, each labelled 1 / 0 with its patient's answer. The
  image model's patient probability is the mean of its slices'."""
  patients = np.unique(data.patient)
  answers = dict(zip(patients, target(key).labels(clinical, patients)))
  labels = np.array([answers[p] for p in data.patient])
  keep = (data.label == 1) & ~np.isnan(labels)
  if not keep.any():
    raise UserError(f'{clinical.path}: no patient with tumour slices has a {target(key).column} code: nothing to train '
                    f'--type-target {key} on')
  fields = {f.name: getattr(data, f.name)[keep] for f in dataclasses.fields(data)}
  return dataclasses.replace(data, **{**fields, 'label': labels[keep].astype(np.int32)})


def feature_vector(found: ShapeFeatures, intensities: Mapping[str, float | None] | None = None,
                   names: Sequence[str] = FEATURE_NAMES) -> np.ndarray:
  """`names` (shape features, and `intensity_features`' where given) of one patient, NaN for a
  feature it lacks. Intensity features asked for without `intensities` are refused, not filled."""
  log = lambda v: np.log(v) if v else np.nan
  values = {'log_voxels': log(found.voxels), 'log_largest_slice_area': log(found.largest_slice_area),
            'tumour_slices': found.tumour_slices, 'pieces': found.pieces,
            **{name: getattr(found, name) for name in FEATURE_NAMES[4:]}, **(intensities or {})}
  if missing := [n for n in names if n not in values]:
    raise ValueError(f'features {missing} need the patient\'s intensity features')
  return np.array([np.nan if values[n] is None else values[n] for n in names], float)


@dataclasses.dataclass(frozen=True)
class LogisticModel:
  """A fitted model: the medians that fill missing features, the standardization, the weights."""
  median: np.ndarray
  mean: np.ndarray
  scale: np.ndarray
  weights: np.ndarray
  intercept: float

  def probability(self, features: np.ndarray) -> np.ndarray:
    filled = np.where(np.isnan(features), self.median, features)
    return 1 / (1 + np.exp(-(((filled - self.mean) / self.scale) @ self.weights + self.intercept)))

  def as_dict(self) -> dict:
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in dataclasses.asdict(self).items()}

  @classmethod
  def from_dict(cls, d: dict) -> 'LogisticModel':
    return cls(*(np.asarray(d[k], float) for k in ('median', 'mean', 'scale', 'weights')), float(d['intercept']))


def fit(features: np.ndarray, labels: np.ndarray, l2: float = L2) -> LogisticModel:
  """The recipe of the module docstring on features [N, F] and 0 / 1 labels [N]."""
  median = np.nanmedian(features, axis=0)
  median = np.where(np.isnan(median), 0.0, median)
  filled = np.where(np.isnan(features), median, features)
  mean, scale = filled.mean(0), filled.std(0)
  scale = np.where(scale > 0, scale, 1.0)
  x = np.concatenate([(filled - mean) / scale, np.ones((len(filled), 1))], axis=1)
  penalty = np.diag([l2] * features.shape[1] + [0.0])
  w = np.zeros(x.shape[1])
  for _ in range(100):  # Newton's method on the penalized log-likelihood (convex: it converges)
    p = 1 / (1 + np.exp(-x @ w))
    gradient = x.T @ (p - labels) + penalty @ w
    step = np.linalg.solve(x.T @ (x * (p * (1 - p))[:, None]) + penalty, gradient)
    w -= step
    if np.abs(step).max() < 1e-10:
      break
  return LogisticModel(median, mean, scale, w[:-1], float(w[-1]))


def stratified_folds(labels: np.ndarray, folds: int, rng: np.random.Generator) -> np.ndarray:
  """Each patient's fold, 0..folds-1, with each class dealt round the folds in a random order."""
  assignment = np.empty(len(labels), int)
  for value in np.unique(labels):
    members = rng.permutation(np.flatnonzero(labels == value))
    assignment[members] = (np.arange(len(members)) + rng.integers(folds)) % folds
  return assignment


def cross_validated(features: np.ndarray, labels: np.ndarray, repeats: int = REPEATS, folds: int = FOLDS,
                    seed: int = 0) -> np.ndarray:
  """Out-of-fold probabilities [repeats, N]: in each repeat every patient's probability comes from
  the model fitted on the other folds, never on the patient."""
  rng = np.random.default_rng(seed)
  found = np.full((repeats, len(labels)), np.nan)
  for r in range(repeats):
    assignment = stratified_folds(labels, folds, rng)
    for k in range(folds):
      held = assignment == k
      found[r, held] = fit(features[~held], labels[~held]).probability(features[held])
  return found


def score(features: np.ndarray, labels: np.ndarray, repeats: int = REPEATS, permutations: int = PERMUTATIONS,
          bootstrap: int = BOOTSTRAP, seed: int = 0) -> dict:
  """A target's cross-validated figures: 'roc_auc' of the repeats' mean out-of-fold probability,
  'repeat_range' of the repeats' own AUCs, 'confidence_95' (patient bootstrap), 'permutation_p'
  ((1 + permuted AUCs at least as high) / (1 + permutations)), counts. A target with fewer than
  `FOLDS` patients on either side cannot put one of each in every fold: its figures are None, with
  a note saying why."""
  counts = {'patients': int(len(labels)), 'positives': int(labels.sum())}
  if min(labels.sum(), len(labels) - labels.sum()) < FOLDS:
    return {'roc_auc': None, 'repeat_range': None, 'confidence_95': None, 'permutation_p': None, **counts,
            'note': f'not scored: {counts["positives"]} of {counts["patients"]} patients positive; five-fold '
                    f'cross-validation needs at least {FOLDS} on each side'}
  oof = cross_validated(features, labels, repeats, seed=seed)
  rng = np.random.default_rng(seed + 1)
  permuted = [roc_auc(shuffled, cross_validated(features, shuffled, repeats, seed=seed + 2 + i).mean(0))
              for i, shuffled in enumerate(rng.permutation(labels) for _ in range(permutations))]
  per_repeat = [roc_auc(labels, row) for row in oof]
  return {**_figures(labels, oof.mean(0), permuted, bootstrap, seed),
          'repeat_range': [min(per_repeat), max(per_repeat)]}


def _figures(labels: np.ndarray, probability: np.ndarray, permuted: list[float], bootstrap: int, seed: int) -> dict:
  """ROC AUC of out-of-fold `probability`, its patient-bootstrap interval, the permutation p-value
  against the AUCs of `permuted` labelings, the counts and the probabilities."""
  observed = roc_auc(labels, probability)
  interval = bootstrap_by_patient(lambda rows, _: {'roc_auc': roc_auc(labels[rows], probability[rows])},
                                  np.arange(len(labels)), bootstrap, seed=seed).get('roc_auc')
  return {'roc_auc': observed, 'repeat_range': None, 'confidence_95': interval,
          'permutation_p': (1 + sum(a >= observed for a in permuted)) / (1 + len(permuted)),
          'patients': int(len(labels)), 'positives': int(labels.sum()), 'out_of_fold': probability.tolist()}


def out_of_fold_figures(labels: np.ndarray, probability: np.ndarray, permutations: int = PERMUTATIONS,
                        bootstrap: int = BOOTSTRAP, seed: int = 0) -> dict:
  """Figures of out-of-fold probabilities made elsewhere (the image model's five folds): 'roc_auc',
  'confidence_95' (patient bootstrap) and 'permutation_p', the labels shuffled against the fixed
  probabilities (a test of the predictions, not of the training: cheaper than `score`'s)."""
  rng = np.random.default_rng(seed)
  permuted = [roc_auc(rng.permutation(labels), probability) for _ in range(permutations)]
  return _figures(labels, probability, permuted, bootstrap, seed)


def together(clinical: ClinicalTable, key: str, *parts: dict, permutations: int = PERMUTATIONS,
             bootstrap: int = BOOTSTRAP) -> dict:
  """Models of target `key` together (the image model and the shape model): each patient's mean of
  their out-of-fold probabilities (each part's 'patient_ids' and 'out_of_fold'), over the patients
  every part scored, with `out_of_fold_figures`. The recipe, stated before any image model's figures
  were seen and not tuned: the plain mean, no weights, no calibration."""
  probability = [dict(zip(part['patient_ids'], part['out_of_fold'])) for part in parts]
  patients = sorted(set.intersection(*(set(p) for p in probability)))
  labels = target(key).labels(clinical, patients)
  known = ~np.isnan(labels)
  mean = np.array([np.mean([p[patient] for p in probability]) for patient in patients])
  return {**out_of_fold_figures(labels[known], mean[known], permutations, bootstrap),
          'patient_ids': [p for p, k in zip(patients, known) if k]}


def patient_matrix(shapes: Mapping[str, ShapeFeatures], intensities: Mapping[str, Mapping] | None = None,
                   names: Sequence[str] = FEATURE_NAMES) -> tuple[list[str], np.ndarray]:
  patients = sorted(shapes)
  return patients, np.stack([feature_vector(shapes[p], intensities[p] if intensities else None, names)
                             for p in patients])


def train(shapes: Mapping[str, ShapeFeatures], clinical: ClinicalTable, masks: str, repeats: int = REPEATS,
          permutations: int = PERMUTATIONS, seed: int = 0, intensities: Mapping[str, Mapping] | None = None,
          names: Sequence[str] = FEATURE_NAMES) -> dict:
  """Every target scored by cross-validation and fitted once on all its patients on the features
  `names` (one of `FEATURE_SETS`): the type model (`save` writes it; `apply` uses it) with each
  target's figures. A target whose patients are all on one side has no model."""
  patients, features = patient_matrix(shapes, intensities, names)
  targets = {}
  for target in TARGETS:
    labels = target.labels(clinical, patients)
    use = ~np.isnan(labels)
    if len(np.unique(labels[use])) < 2:
      continue
    figures = score(features[use], labels[use], repeats, permutations, seed=seed)
    figures['patient_ids'] = [p for p, u in zip(patients, use) if u]
    targets[target.name] = {'column': target.column, 'positive': target.positive, 'figures': figures,
                            'model': fit(features[use], labels[use]).as_dict()}
  return {'format': FORMAT, 'features': list(names), 'masks': masks, 'l2': L2, 'folds': FOLDS,
          'repeats': repeats, 'permutations': permutations, 'targets': targets}


def model_file(feature_set: str) -> str:
  """Where a type model of `FEATURE_SETS[feature_set]` is saved: type_model.json for `APPLIED` (the
  one `--apply-to` applies unless told otherwise), else type_model_<set>.json."""
  return 'type_model.json' if feature_set == APPLIED else f'type_model_{feature_set.replace(" ", "_")}.json'


def save(model: dict, path: Path) -> None:
  write_json(path, model)


def load(path: str | Path) -> dict:
  """A saved type model; one of another format or other features is refused, naming the file."""
  path = Path(path)
  try:
    model = json.loads(path.read_text(encoding='utf-8'))
  except (OSError, ValueError) as e:
    raise UserError(f'{path}: not a readable type model ({type(e).__name__}); '
                    'python -m experiments.radiogenomics writes one as type_model.json') from None
  if model.get('format') != FORMAT or model.get('features') not in [list(f) for f in FEATURE_SETS.values()]:
    raise UserError(f'{path}: a type model of another format or feature set than this jaxbrain reads; train it again '
                    'with python -m experiments.radiogenomics')
  return model


def needs_intensity(model: dict) -> bool:
  return any(name in intensity.FEATURE_NAMES for name in model['features'])


def feature_set(model: dict) -> str:
  """The name in `FEATURE_SETS` of a loaded model's features ('shape', 'intensity', ...)."""
  return next(name for name, names in FEATURE_SETS.items() if list(names) == model['features'])


def apply(model: dict, shapes: Mapping[str, ShapeFeatures],
          intensities: Mapping[str, Mapping] | None = None) -> dict[str, dict[str, float]]:
  """{patient: {target: probability}} from a saved type model (`intensities` where it needs them)."""
  patients, features = patient_matrix(shapes, intensities, model['features'])
  found = {p: {} for p in patients}
  for name, target in model['targets'].items():
    for patient, p in zip(patients, LogisticModel.from_dict(target['model']).probability(features)):
      found[patient][name] = float(p)
  return found
