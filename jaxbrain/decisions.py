"""A run's decisions, owned here: what they are, how they are chosen on validation patients, and
the one writer and reader of their file.

- `Decision`: a run's `decision.json`: the selected checkpoint, the label threshold (a
  classifier's; a segmenter's slice is labelled by its mask, and its threshold is its mask rule's
  pixel threshold) and, for a segmenter, its `MaskRule`, each with what it was chosen on.
  `write_decision` is its one writer and `Decision.from_json` its one reader (`runs.read_decision`
  reads a run's file with it).
- `choose_rule`: a segmenter's mask rule, by mean per-volume Dice at the slices' native 256x256.
- `choose_gate`: the classifier probability below which a pair's masks are emptied.
- `Detector`, `detect`, `choose_detector`: how a classifier and a segmenter answer "is there a
  tumor?" together (or a segmenter alone); `GateChoice` reads what `jaxbrain gate` stored.
Every choice keeps the plain one unless another gains `MARGIN` on the patients it is made on.
`postprocess` turns pixels into masks by a rule; the rule is chosen here.
"""
from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
from scipy import ndimage

from jaxbrain.data.arrays import patient_stacks
from jaxbrain.files import write_json
from jaxbrain.folders import RunDir
from jaxbrain.metrics import DECISION_THRESHOLD, decision_metrics, segmentation_metrics_from_counts
from jaxbrain.postprocess import IN_PLANE, MaskRule


LABELLED_BY_MASK = 'the mask rule: a slice is labelled tumor when its post-processed mask is not empty'


@dataclasses.dataclass(frozen=True)
class Decision:
  """What a run (or an ensemble) decided on validation, as its decision.json holds it: the label
  `threshold` (a classifier labels a slice tumor at probability >= it; a segmenter labels a slice
  by its post-processed mask, and its `threshold` is its mask rule's pixel threshold), the
  `mask_rule` of a segmenter, what each was chosen on (with a single segmentation run's validation
  Dice of the default and the chosen rule), and the `checkpoint` the run measured on test
  ('best/120'). Runs written before a field existed read with its default."""
  threshold: float = DECISION_THRESHOLD
  threshold_chosen_on: str = 'fixed default'
  mask_rule: MaskRule | None = None
  mask_rule_chosen_on: str | None = None
  validation_dice_per_volume_native: dict | None = None
  checkpoint: str | None = None

  @classmethod
  def by_mask_rule(cls, rule: MaskRule, chosen_on: str, scores: dict | None = None) -> Decision:
    """A segmenter's decision: slices labelled by `rule`'s masks, the rule chosen on `chosen_on`
    (`scores`: the default's and the chosen rule's validation Dice)."""
    return cls(rule.threshold, LABELLED_BY_MASK, rule, chosen_on, scores)

  def with_checkpoint(self, checkpoint: str) -> Decision:
    return dataclasses.replace(self, checkpoint=checkpoint)

  def to_json(self) -> dict:
    record = {'threshold': self.threshold, 'threshold_chosen_on': self.threshold_chosen_on}
    if self.mask_rule is not None:
      record.update(mask_rule=dataclasses.asdict(self.mask_rule), mask_rule_chosen_on=self.mask_rule_chosen_on)
    if self.validation_dice_per_volume_native is not None:
      record['validation_dice_per_volume_native'] = self.validation_dice_per_volume_native
    return record if self.checkpoint is None else {**record, 'checkpoint': self.checkpoint}

  @classmethod
  def from_json(cls, record: dict) -> Decision:
    known = {f.name for f in dataclasses.fields(cls)}
    fields = {k: v for k, v in record.items() if k in known}
    if fields.get('mask_rule') is not None:
      fields['mask_rule'] = MaskRule.from_json(fields['mask_rule'])
    return cls(**fields)


def write_decision(run: RunDir, decision: Decision) -> Path:
  """The run's decision.json (the one writer; `Decision.from_json` reads it back)."""
  write_json(run.decision, decision.to_json())
  return run.decision


MARGIN = 0.005  # what a choice must gain over the plain one to replace it (mean per-volume Dice; a detector's ROC AUC)


def _unless_clearly_better(plain, plain_score: float | None, best: tuple):
  """`best`'s choice when its score beats the plain choice's by MARGIN (or the plain one was not
  tried), else the plain one: a gain below that on a dozen validation patients is noise, and the
  plain choice is the one that cannot overfit them."""
  choice, score = best
  return choice if plain_score is None or score >= plain_score + MARGIN else plain


THRESHOLDS = (0.5, 0.3, 0.4, 0.6, 0.7)
MIN_PIXELS = (0, 16, 32, 64, 128, 256)


@dataclasses.dataclass
class _Components:
  """The in-plane components of thresholded probabilities, with what any rule's counts need: per
  component its slice, size and true pixels, and the pairs that touch across adjacent slices of one
  patient. Masks of a rule are then sums over the components it keeps, without pixel work."""
  slice_of: np.ndarray  # [C + 1] (entry 0: background)
  size: np.ndarray
  true_pixels: np.ndarray
  touching: np.ndarray  # [E, 2] component pairs on adjacent slices, 26-connected
  alone: np.ndarray  # [C + 1] bool: on a patient's only slice (never dropped as single-slice)

  @classmethod
  def of(cls, binary: np.ndarray, truth: np.ndarray, patients: np.ndarray) -> _Components:
    labels, count = ndimage.label(binary, IN_PLANE)
    flat = labels.ravel()
    slice_of = np.zeros(count + 1, int)
    slice_of[1:] = [span[0].start for span in ndimage.find_objects(labels, count)]
    stack_size = np.zeros(len(patients), int)
    for span in patient_stacks(patients):
      stack_size[span] = span.stop - span.start
    same = np.asarray(patients)[1:] == np.asarray(patients)[:-1]
    occupied = labels.reshape(len(labels), -1).any(1)
    pairs = []
    for k in np.flatnonzero(same & occupied[:-1] & occupied[1:]):
      here, padded = labels[k], np.pad(labels[k + 1], 1)
      for dy, dx in itertools.product(range(3), range(3)):
        there = padded[dy:dy + here.shape[0], dx:dx + here.shape[1]]
        both = (here > 0) & (there > 0)
        pairs.append(np.unique(here[both].astype(np.int64) * (count + 1) + there[both]))
    codes = np.unique(np.concatenate(pairs)) if pairs else np.zeros(0, np.int64)
    touching = np.stack([codes // (count + 1), codes % (count + 1)], 1)
    return cls(slice_of, np.bincount(flat, minlength=count + 1),
               np.bincount(flat, weights=np.asarray(truth).ravel(), minlength=count + 1), touching,
               stack_size[slice_of] == 1)

  def counts(self, min_pixels: int, drop_single_slice: bool, true_per_slice: np.ndarray) -> dict:
    """`segmentation_counts` of the masks that keep the components of at least `min_pixels`, less
    those on one slice only when `drop_single_slice`."""
    keep = self.size >= max(min_pixels, 1)
    keep[0] = False
    if drop_single_slice:
      linked = np.zeros_like(keep)
      live = self.touching[keep[self.touching[:, 0]] & keep[self.touching[:, 1]]]
      linked[live.ravel()] = True
      keep &= linked | self.alone
    slices = len(true_per_slice)
    predicted = np.bincount(self.slice_of[keep], self.size[keep], minlength=slices)
    intersection = np.bincount(self.slice_of[keep], self.true_pixels[keep], minlength=slices)
    return {'intersection': intersection, 'predicted': predicted, 'true': true_per_slice,
            'union': predicted + true_per_slice - intersection}


def choose_rule(probabilities: dict[bool, np.ndarray], truth: np.ndarray, patients: np.ndarray,
                thresholds=THRESHOLDS, min_pixels=MIN_PIXELS) -> tuple[MaskRule, list[dict]]:
  """(the rule with the highest mean per-volume Dice, a row per rule tried with its Dice and
  false-positive rate), on validation slices grouped by patient in slice order; every combination
  of the flip variants, `thresholds`, `min_pixels` and single-slice removal is scored.

  `probabilities`: {flip_average: [N, H, W]}, the keys being the variants to try. Rules are tried
  from the plainest (the default first); a later one must score strictly higher to win, so a tie
  keeps the simpler rule, and the winner replaces the default only if it gains MARGIN.
  """
  true_per_slice = np.asarray(truth).reshape(len(truth), -1).sum(1)
  rows, best = [], None
  for flip, threshold in itertools.product(sorted(probabilities), thresholds):
    components = _Components.of(probabilities[flip] > threshold, truth, patients)
    for minimum, single in itertools.product(min_pixels, (False, True)):
      rule = MaskRule(threshold, minimum, single, flip)
      scores = segmentation_metrics_from_counts(components.counts(minimum, single, true_per_slice), patients)
      rows.append({**dataclasses.asdict(rule), 'dice_per_volume': scores['dice_per_volume'],
                   'false_positive_rate': scores['false_positive_rate']})
      if best is None or scores['dice_per_volume'] > best[1]:
        best = rule, scores['dice_per_volume']
  plain = next((row['dice_per_volume'] for row in rows if MaskRule.from_json(row) == MaskRule()), None)
  return _unless_clearly_better(MaskRule(), plain, best), rows


GATE_THRESHOLDS = (None, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def gated_counts(counts: dict, probability: np.ndarray, gate: float | None) -> dict:
  """`segmentation_counts` of masks emptied on the slices whose classifier `probability` [N] is
  below `gate` (None: no gate)."""
  if gate is None:
    return counts
  kept = np.asarray(probability) >= gate
  return {'intersection': np.where(kept, counts['intersection'], 0),
          'predicted': np.where(kept, counts['predicted'], 0), 'true': counts['true'],
          'union': np.where(kept, counts['union'], counts['true'])}


def pipeline_metrics(counts: dict, patients: np.ndarray) -> dict:
  """`segmentation_metrics_from_counts` of a detect-then-localize pipeline's masks, with its
  slice-level `detection_accuracy`: a slice is called tumor when its (gated) mask is not empty."""
  called, truth = np.asarray(counts['predicted']) > 0, np.asarray(counts['true']) > 0
  return {**segmentation_metrics_from_counts(counts, patients), 'detection_accuracy': float(np.mean(called == truth))}


def choose_gate(counts: dict, probability: np.ndarray, patients: np.ndarray,
                gates=GATE_THRESHOLDS) -> tuple[float | None, list[dict]]:
  """(the classifier probability below which a slice's mask is emptied, best by mean per-volume
  Dice; None: no gate), with a row per gate tried, on validation slices: `counts` are the
  segmenter's (post-processed) masks' `segmentation_counts`, `probability` [N] the classifier's.
  A later gate must score strictly higher to win, and must gain MARGIN over no gate to replace it."""
  rows, best = [], None
  for gate in gates:
    scores = pipeline_metrics(gated_counts(counts, probability, gate), patients)
    rows.append({'gate': gate, **{k: scores[k] for k in ('dice_per_volume', 'false_positive_rate',
                                                         'tumor_detection_rate', 'detection_accuracy')}})
    if best is None or scores['dice_per_volume'] > best[1]:
      best = gate, scores['dice_per_volume']
  plain = next((row['dice_per_volume'] for row in rows if row['gate'] is None), None)
  return _unless_clearly_better(None, plain, best), rows


# A pair's slice detector: whose probability answers "is there a tumor?", tried in this order.
# classifier: the classifier's probability; segmenter: its largest pixel probability;
# mean / geometric: the two probabilities' arithmetic / geometric mean.
DETECTORS = ('classifier', 'segmenter', 'mean', 'geometric')
DETECTOR_SAID = {'classifier': 'the classifier\'s probability',
                 'segmenter': 'the segmenter\'s probability (its largest pixel probability)',
                 'mean': 'the mean of the classifier\'s and the segmenter\'s probabilities',
                 'geometric': 'the geometric mean of the classifier\'s and the segmenter\'s probabilities'}
SMOOTHING = (0, 1)  # neighbouring slices on either side a probability is averaged with, within its patient
DETECTION_THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(1, 20))  # a combined detector's label thresholds tried


@dataclasses.dataclass(frozen=True)
class Detector:
  """How a classifier and a segmenter answer "is there a tumor?" together (`DETECTORS`), with the
  slice probabilities smoothed along each patient's slices over `smoothing` neighbours, and a
  slice labelled tumor at probability >= `threshold`. The two models alone (no smoothing) label as
  they do alone: `threshold` None, the classifier at its own threshold, the segmenter by its mask
  (not empty)."""
  combination: str = 'classifier'
  smoothing: int = 0
  threshold: float | None = None

  @property
  def is_one_model(self) -> bool:
    return self.combination in ('classifier', 'segmenter') and not self.smoothing

  def label_threshold(self, classifier_threshold: float) -> float:
    """The probability at which a slice is labelled tumor: its own, else the classifier's."""
    return classifier_threshold if self.threshold is None else self.threshold

  def in_words(self, classifier_threshold: float | None = None) -> str:
    """How this detector labels a slice, in the one wording pages and model cards show
    (`classifier_threshold`: the classifier's own, where one labels at it)."""
    if self.is_one_model and self.combination == 'segmenter':
      return 'the segmenter\'s own labels: a slice is tumour when its mask is not empty'
    if self.is_one_model:
      cut = 'its own threshold' if classifier_threshold is None else f'{classifier_threshold:g}'
      return f'the classifier\'s own labels: a slice is tumour at probability >= {cut}'
    averaged = f', averaged over {self.smoothing} neighbouring slice(s) on either side' if self.smoothing else ''
    return f'{DETECTOR_SAID[self.combination]}{averaged}, tumour at >= {self.threshold:g}'

  @classmethod
  def from_json(cls, record: dict | None) -> Detector:
    return cls(**{f.name: record[f.name] for f in dataclasses.fields(cls) if f.name in record}) if record else cls()


@dataclasses.dataclass(frozen=True)
class GateChoice:
  """What `jaxbrain gate` chose on validation and stored in the segmentation run (`gates/*.json`,
  whose other fields are the figures it measured): for a pair, the `gate` (the classifier
  probability below which a slice's mask is emptied; None: no gate) and the `detector`; for a
  segmenter alone, its own `detector`. Files written before detectors were chosen read with none."""
  gate: float | None = None
  detector: Detector | None = None

  @classmethod
  def from_json(cls, record: dict) -> GateChoice:
    return cls(record.get('gate'), Detector.from_json(record['detector']) if record.get('detector') else None)


def smoothed_along_slices(probability: np.ndarray, stacks: np.ndarray, width: int) -> np.ndarray:
  """Each slice's probability averaged with up to `width` neighbours on either side within its
  stack (`stacks` [N]: consecutive equal entries, in slice order); `width` 0 returns it unchanged.
  Tumors span neighbouring slices, so a lone high slice among low ones is more likely noise."""
  probability = np.asarray(probability, np.float64)
  if not width:
    return probability
  smoothed = np.empty_like(probability)
  for stack in patient_stacks(np.asarray(stacks)):
    values = probability[stack]
    for i in range(len(values)):
      smoothed[stack.start + i] = values[max(0, i - width):i + width + 1].mean()
  return smoothed


def detect(detector: Detector, classifier: np.ndarray | None, segmenter: np.ndarray, segmenter_label: np.ndarray,
           stacks: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
  """(probability [N], label [N]) of slices by `detector`, from the classifier's and the segmenter's
  slice probabilities, the segmenter's own labels (its mask is not empty) and the classifier's
  `threshold` (the label threshold of a detector without its own). `classifier` is None for a
  segmenter alone, whose detectors are the 'segmenter' ones."""
  segmenter = np.asarray(segmenter, np.float64)
  if detector.combination == 'segmenter':
    combined = segmenter
  elif classifier is None:
    raise ValueError(f'the {detector.combination} detector needs a classifier\'s probabilities')
  else:
    classifier = np.asarray(classifier, np.float64)
    combined = {'classifier': classifier, 'mean': (classifier + segmenter) / 2,
                'geometric': np.sqrt(classifier * segmenter)}[detector.combination]
  probability = smoothed_along_slices(combined, stacks, detector.smoothing)
  if detector.combination == 'segmenter' and not detector.smoothing:
    return probability, np.asarray(segmenter_label).astype(int)
  return probability, (probability >= detector.label_threshold(threshold)).astype(int)


def most_accurate_threshold(labels: np.ndarray, probability: np.ndarray, default: float,
                            thresholds=DETECTION_THRESHOLDS) -> float:
  """The threshold of `thresholds` whose labels (probability >= it) are the most accurate on these
  slices; of equally accurate ones, the nearest to `default`."""
  labels, probability = np.asarray(labels).astype(bool), np.asarray(probability)
  return max(thresholds, key=lambda t: (np.mean((probability >= t) == labels), -abs(t - default)))


def choose_detector(labels: np.ndarray, classifier: np.ndarray | None, segmenter: np.ndarray,
                    segmenter_label: np.ndarray, stacks: np.ndarray, threshold: float) -> tuple[Detector, list[dict]]:
  """(the pair's detector, a row per detector tried with its label threshold, ROC AUC, accuracy and
  balanced accuracy), chosen on validation slices with their true `labels` (`threshold`: the
  classifier's). With `classifier` None, a segmenter's own detector, chosen by the same rule among
  the detectors that need no classifier (the segmenter's probability, smoothed or not). The rule,
  stated before the ensembles' runs:
  - the two models alone label as they do alone; every other detector (`DETECTORS` x `SMOOTHING`)
    at its `most_accurate_threshold` on these slices;
  - a detector qualifies when its ROC AUC and its accuracy are both at least the better model
    alone's, so that the pair never answers worse than either model on the slices it was chosen on;
  - of those that qualify, the highest ROC AUC wins (the earlier on ties), and it replaces a model
    alone that qualifies only if it gains MARGIN over it;
  - when none qualifies (one model ranks better, the other labels better): the model alone with the
    more accurate labels, the classifier on a tie."""
  rows = []
  for combination, smoothing in itertools.product(DETECTORS if classifier is not None else ('segmenter',), SMOOTHING):
    detector = Detector(combination, smoothing)
    if not detector.is_one_model:
      probability, _ = detect(detector, classifier, segmenter, segmenter_label, stacks, threshold)
      detector = dataclasses.replace(detector, threshold=most_accurate_threshold(labels, probability, threshold))
    probability, label = detect(detector, classifier, segmenter, segmenter_label, stacks, threshold)
    scores = decision_metrics(labels, label, probability)
    rows.append({**dataclasses.asdict(detector), **{k: scores[k] for k in ('roc_auc', 'accuracy', 'balanced_accuracy')}})
  alone = [row for row in rows if Detector.from_json(row).is_one_model]
  bar = {k: max(row[k] for row in alone) for k in ('roc_auc', 'accuracy')}
  qualify = [row for row in rows if row['roc_auc'] >= bar['roc_auc'] and row['accuracy'] >= bar['accuracy']]
  if not qualify:
    return Detector.from_json(max(alone, key=lambda row: row['accuracy'])), rows  # max keeps the first of equals
  best = max(qualify, key=lambda row: row['roc_auc'])
  model = next((row for row in qualify if Detector.from_json(row).is_one_model), None)
  if model is None:
    return Detector.from_json(best), rows
  chosen = _unless_clearly_better(Detector.from_json(model), model['roc_auc'], (Detector.from_json(best), best['roc_auc']))
  return chosen, rows
