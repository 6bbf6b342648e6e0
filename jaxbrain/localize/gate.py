"""`jaxbrain gate --run CLS --seg-run SEG --data-dir DIR`: detect, then localize.

Chooses, on the validation patients the two runs share, the classifier probability below which a
slice's mask is emptied (or no gate), by the pipeline's mean per-volume Dice at 256x256; stores it
in the segmentation run (`gates/<classifier>.json`, which `jaxbrain predict --run CLS --seg-run SEG`
applies); and measures the pipeline on the shared test patients: per-volume Dice and IoU, Dice on
tumor slices, the false-positive rate on tumor-free slices, and slice-level detection accuracy
(a slice is called tumor when its gated mask is not empty), with patient-bootstrap intervals,
beside the segmenter alone and the classifier alone.

It also chooses, on the same validation patients, the pair's detector: whose slice probability
answers "is there a tumor?" (the classifier's, the segmenter's, their mean or their geometric mean,
each as it is or averaged with its neighbouring slices, a combination labelling at its most
accurate threshold; `decisions.choose_detector`: of the detectors at least as good as the better
model alone in both ROC AUC and accuracy, the highest ROC AUC, replacing a model alone only if it
gains 0.005), which `predict` then gives as `probability` and `label`; the test patients' detection
figures of the chosen detector stand beside the classifier alone and the segmenter alone.

`jaxbrain gate --seg-run SEG --data-dir DIR` without a classifier chooses the segmenter's own
detector among those that need none (its largest pixel probability, as it is or averaged with
its neighbouring slices), stores it in the run (`gates/segmenter-alone.json`, which `predict
--seg-run SEG` and `jaxbrain export` apply), and measures it on the test patients with intervals.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from jaxbrain.data import kaggle3m
from jaxbrain.decisions import MARGIN, Detector, choose_detector, choose_gate, detect, gated_counts, pipeline_metrics
from jaxbrain.files import write_json
from jaxbrain.flags import INFERENCE
from jaxbrain.inference import Scorer
from jaxbrain.folders import RunDir
from jaxbrain.metrics import classification_metrics, decision_metrics, patient_intervals, segmentation_counts
from jaxbrain.runs import RunError, check_data, check_same_split, gate_path, read_split

PIPELINE_METRICS = ('dice_per_volume', 'iou_per_volume', 'dice_tumor_slices', 'false_positive_rate', 'tumor_detection_rate',
            'detection_accuracy')


def patients_slices(data_dir: Path, patients: list[str], part: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(images [N, 256, 256, 3], true masks [N, 256, 256] bool, patient [N]) of `patients` in
  `data_dir`, stacked by patient in slice order."""
  wanted = set(patients)
  records = sorted((r for r in kaggle3m.scan(data_dir) if r.patient in wanted), key=lambda r: (r.patient, r.slice))
  missing = wanted - {r.patient for r in records}
  if missing:
    raise RunError(f'{data_dir}: lacks {len(missing)} {part} patients of the runs\' split.json (e.g. '
                   f'{sorted(missing)[0]}); give the data the runs were trained on')
  pairs = kaggle3m.map_slices(kaggle3m.read_slice, records, progress=f'reading {part}')
  return (np.stack([image for image, _ in pairs]), np.stack([mask > 0 for _, mask in pairs]),
          np.array([r.patient for r in records]))


def _score(scorer: Scorer, images: np.ndarray, patients: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(the classifier's probability [N], the segmenter's [N], its post-processed, ungated masks [N, 256, 256])."""
  scores = scorer.score(images, patients, gated=False)
  return scores.classifier_probability, scores.segmenter_probability, scores.mask


DETECTION_METRICS = ('roc_auc', 'accuracy', 'balanced_accuracy', 'sensitivity', 'specificity')


def _detection(detector: Detector, classifier: np.ndarray | None, segmenter: np.ndarray, masks: np.ndarray,
               labels: np.ndarray, patients: np.ndarray, threshold: float, bootstrap_samples: int = 0,
               seed: int = 0) -> dict:
  """A detector's slice-detection figures, with patient-bootstrap intervals when samples are asked."""
  probability, label = detect(detector, classifier, segmenter, masks.any(axis=(1, 2)), patients, threshold)
  scores = decision_metrics(labels, label, probability)
  figures = {k: scores[k] for k in DETECTION_METRICS}
  if not bootstrap_samples:
    return figures
  resampled = lambda rows, groups: {k: v for k, v in decision_metrics(labels[rows], label[rows],  # noqa: E731
                                                                      probability[rows]).items() if k in DETECTION_METRICS}
  return {**figures, **patient_intervals(resampled, patients, bootstrap_samples, seed)}


def _with_intervals(counts: dict, patients: np.ndarray, samples: int, seed: int) -> dict:
  resampled = lambda rows, groups: pipeline_metrics({k: v[rows] for k, v in counts.items()}, groups)  # noqa: E731
  metrics = pipeline_metrics(counts, patients)
  return {**{k: metrics[k] for k in PIPELINE_METRICS}, **patient_intervals(resampled, patients, samples, seed)}


def choose_and_measure(run_dir: str | Path, seg_run_dir: str | Path, data_dir: str | Path,
                       batch_size: int = INFERENCE.batch_size, bootstrap_samples: int = INFERENCE.bootstrap_samples,
                       seed: int = INFERENCE.seed) -> dict:
  """Chooses the gate on validation, stores it in the segmentation run, and returns what was chosen
  and measured (also written to that gate file)."""
  scorer = Scorer(run_dir, seg_run_dir, batch_size)
  _refuse_bundles(scorer)
  split = check_same_split(scorer.classifier, scorer.segmenter)
  check_data(data_dir, scorer.classifier.directory, scorer.segmenter.directory)
  threshold = scorer.classifier.label_threshold
  images, truth, patients = patients_slices(Path(data_dir), split['validation'], 'validation')
  probability, segmenter, masks = _score(scorer, images, patients)
  gate, tried = choose_gate(segmentation_counts(masks, truth), probability, patients)
  labels = truth.reshape(len(truth), -1).any(1).astype(int)
  detector, detectors_tried = choose_detector(labels, probability, segmenter, masks.any(axis=(1, 2)), patients,
                                              threshold)
  images, truth, patients = patients_slices(Path(data_dir), split['test'], 'test')
  probability, segmenter, masks = _score(scorer, images, patients)
  counts = segmentation_counts(masks, truth)
  labels = truth.reshape(len(truth), -1).any(1).astype(int)
  classifier = classification_metrics(labels, probability, threshold)
  detection = {name: _detection(chosen, probability, segmenter, masks, labels, patients, threshold)
               for name, chosen in (('chosen', detector), ('classifier_alone', Detector()),
                                    ('segmenter_alone', Detector('segmenter')))}
  result = {
      'gate': gate, 'classifier': str(scorer.classifier.directory), 'segmenter': str(scorer.segmenter.directory),
      'classifier_checkpoint': str(scorer.classifier.checkpoint), 'mask_rule': str(scorer.segmenter.mask_rule),
      'chosen_on': f'validation patients ({len(split["validation"])}): mean per-volume Dice at 256x256 of the gated '
                   'masks; null = no gate',
      'validation': tried,
      'detector': dataclasses.asdict(detector),
      'detector_chosen_on': f'validation patients ({len(split["validation"])}): of the detectors whose slice-detection '
                            'ROC AUC and accuracy are both at least the better model alone\'s, the highest ROC AUC, '
                            f'replacing a model alone only if it gains {MARGIN:g} (decisions.choose_detector)',
      'detector_validation': detectors_tried,
      'test_patients': len(split['test']),
      'test': {'pipeline': _with_intervals(gated_counts(counts, probability, gate), patients, bootstrap_samples, seed),
               'segmenter_alone': _with_intervals(counts, patients, bootstrap_samples, seed),
               'classifier_alone': {k: classifier[k] for k in ('accuracy', 'balanced_accuracy', 'roc_auc')},
               'detection': detection},
  }
  return _stored(gate_path(scorer.segmenter, scorer.classifier), result)


def _refuse_bundles(scorer: Scorer) -> None:
  """A bundle's decisions are fixed (its checksums cover them): choices are made on runs."""
  for run in scorer.runs:
    if run.bundle is not None:
      raise RunError(f'{run.directory}: is a model bundle, whose decisions are fixed; choose on the run or ensemble it '
                     'was exported from, then export it again')


def _stored(path: Path, result: dict) -> dict:
  path.parent.mkdir(exist_ok=True)
  write_json(path, result)
  return {**result, 'written_to': str(path)}


def choose_own_detector(seg_run_dir: str | Path, data_dir: str | Path, batch_size: int = INFERENCE.batch_size,
                        bootstrap_samples: int = INFERENCE.bootstrap_samples, seed: int = INFERENCE.seed) -> dict:
  """A segmenter's own detector (`jaxbrain gate --seg-run SEG` without --run): chosen on its
  validation patients among the detectors that need no classifier (`decisions.choose_detector`),
  stored in the run (`RunDir.own_detector`, which `predict --seg-run SEG` alone applies), and
  measured on its test patients with patient-bootstrap intervals: the masks by its rule, and the
  slice detection of the chosen detector beside the segmenter's mask labels."""
  scorer = Scorer(None, seg_run_dir, batch_size)
  _refuse_bundles(scorer)
  scorer.detector = Detector('segmenter')  # a stored one set aside: the segmenter's own probability and labels
  split = read_split(scorer.segmenter.directory)
  check_data(data_dir, scorer.segmenter.directory)
  images, truth, patients = patients_slices(Path(data_dir), split['validation'], 'validation')
  scores = scorer.score(images, patients)
  labels = truth.reshape(len(truth), -1).any(1).astype(int)
  segmenter_label = scores.mask.any(axis=(1, 2))
  detector, tried = choose_detector(labels, None, scores.segmenter_probability, segmenter_label, patients, 0.5)
  images, truth, patients = patients_slices(Path(data_dir), split['test'], 'test')
  scores = scorer.score(images, patients)
  labels = truth.reshape(len(truth), -1).any(1).astype(int)
  detection = {name: _detection(chosen, None, scores.segmenter_probability, scores.mask, labels, patients, 0.5,
                                bootstrap_samples, seed)
               for name, chosen in (('chosen', detector), ('segmenter_alone', Detector('segmenter')))}
  result = {
      'segmenter': str(scorer.segmenter.directory), 'mask_rule': str(scorer.segmenter.mask_rule),
      'detector': dataclasses.asdict(detector),
      'detector_chosen_on': f'validation patients ({len(split["validation"])}): of the detectors that need no '
                            'classifier, those whose slice-detection ROC AUC and accuracy are both at least the '
                            'segmenter\'s own labels\', the highest ROC AUC, replacing those labels only if it gains '
                            f'{MARGIN:g} (decisions.choose_detector)',
      'detector_validation': tried,
      'test_patients': len(split['test']),
      'test': {'segmenter': _with_intervals(segmentation_counts(scores.mask, truth), patients, bootstrap_samples, seed),
               'detection': detection},
  }
  return _stored(RunDir.of(scorer.segmenter.directory).own_detector, result)


def format_table(result: dict) -> str:
  """The test patients' figures: the pipeline beside the segmenter alone."""
  gate = 'no gate' if result['gate'] is None else f'mask kept where p(tumor) >= {result["gate"]:g}'
  lines = [f'gate chosen on {result["chosen_on"].split(":")[0]}: {gate}',
           f'test patients ({result["test_patients"]}, used for no choice):',
           f'  {"metric":<22} {"pipeline":>24} {"segmenter alone":>24}']
  for key in PIPELINE_METRICS:
    cells = []
    for part in ('pipeline', 'segmenter_alone'):
      metrics = result['test'][part]
      bounds = (metrics.get('confidence_95') or {}).get(key)
      cells.append(f'{metrics[key]:.3f}' + (' [{:.3f}, {:.3f}]'.format(*bounds) if bounds else ''))
    lines.append(f'  {key:<22} {cells[0]:>24} {cells[1]:>24}')
  alone = result['test']['classifier_alone']
  lines.append('  classifier alone: ' + ', '.join(f'{k} {v:.3f}' for k, v in alone.items()))
  detector = result['detector']
  cut = '' if detector.get('threshold') is None else f', label at >= {detector["threshold"]:g}'
  lines.append(f'detector chosen on validation: {detector["combination"]}, smoothing {detector["smoothing"]}{cut}; '
               'slice detection on the test patients:')
  for name, scores in result['test']['detection'].items():
    lines.append(f'  {name:<18} ' + ', '.join(f'{k} {v:.3f}' for k, v in scores.items()))
  return '\n'.join(lines)


def format_own_table(result: dict) -> str:
  """A segmenter's own detector and its test figures."""
  detector, test = result['detector'], result['test']
  cut = '' if detector.get('threshold') is None else f', label at >= {detector["threshold"]:g}'
  lines = [f'detector chosen on validation (no classifier): {detector["combination"]}, smoothing '
           f'{detector["smoothing"]}{cut}',
           f'test patients ({result["test_patients"]}, used for no choice):',
           '  masks: ' + ', '.join(f'{k} {test["segmenter"][k]:.3f}' for k in PIPELINE_METRICS)]
  for name, scores in test['detection'].items():
    bounds = scores.get('confidence_95') or {}
    lines.append(f'  {name:<18} ' + ', '.join(f'{k} {scores[k]:.3f}' + (' [{:.3f}, {:.3f}]'.format(*bounds[k])
                                                                        if k in bounds else '')
                                              for k in DETECTION_METRICS))
  return '\n'.join(lines)
