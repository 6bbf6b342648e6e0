"""The one inference path: what trained models say about uint8 slices, and the decisions drawn from it.

Pure functions of (model, variables, preprocessing, images) give a classifier's slice tumor
probability, a segmenter's outputs at the model's resolution and its pixel probabilities at the
slices' native resolution; `slice_decisions` turns probabilities into labels and masks (a
classifier's threshold, a segmenter's `MaskRule` applied per patient stack, a pair's gate);
`Scorer` puts loaded runs together. Training's evaluation steps, a segmentation run's decisions,
`predict`, `gate`, the Spark job and the evaluators all come here: `tests/test_inference.py`
checks that no other module calls a model's `probability` or `mask_logits`, `native_logits` or
`apply_rule`.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxbrain.data.arrays import segmenter_inputs
from jaxbrain.data.transforms import Preprocessing, apply_preprocessing, native_logits
from jaxbrain.decisions import Detector, detect
from jaxbrain.flags import INFERENCE
from jaxbrain.models.gradcam import gradcam
from jaxbrain.postprocess import PIXEL_THRESHOLD, MaskRule, apply_rule
from jaxbrain.bundle import load
from jaxbrain.runs import LoadedRun, RunError, gate_path, read_gate

PIXEL_LOGIT = float(np.log(PIXEL_THRESHOLD / (1 - PIXEL_THRESHOLD)))  # a logit above this is a tumor pixel


def slice_probability(model, variables: dict, preprocessing: Preprocessing, images: jax.Array,
                      flip_average: bool = False, with_mask_head: bool = False) -> jax.Array:
  """Images [B, H, W, 3] uint8 -> a classifier's tumor probability [B] (`ResNet.probability`)."""
  x, _ = apply_preprocessing(preprocessing, None, images, train=False)
  return model.apply(variables, x, flip_average, with_mask_head, method='probability')


def slice_heatmaps(model, variables: dict, preprocessing: Preprocessing, images: jax.Array) -> jax.Array:
  """Images [B, H, W, 3] uint8 -> a classifier's Grad-CAM heatmaps [B, h, w] (`models.gradcam`)."""
  return gradcam(model, variables, apply_preprocessing(preprocessing, None, images, train=False)[0])


def features_probability(model, variables: dict, features: jax.Array) -> jax.Array:
  """A frozen backbone's cached features [B, F] -> the classifier's tumor probability [B]
  (`slice_probability` without flip averaging or the mask head, from the head alone)."""
  return jax.nn.softmax(model.apply(variables, features, train=False, method='classify'))[:, 1]


def segmenter_outputs(model, variables: dict, preprocessing: Preprocessing, images: jax.Array) -> dict:
  """Images [B, 256, 256, C] uint8 -> {'mask_probability' [B, S, S] at the model's resolution, and
  at the slices' native resolution under the default rule: 'tumor_pixels' [B] and 'probability'
  [B], the sigmoid of the slice's largest logit (above `PIXEL_THRESHOLD` exactly when a pixel is
  tumor)}: what a segmentation run is validated on every epoch."""
  x, _ = apply_preprocessing(preprocessing, None, images, train=False)
  logits = model.apply(variables, x, train=False)
  native = native_logits(logits, images.shape[1])
  return {'mask_probability': jax.nn.sigmoid(logits), 'tumor_pixels': jnp.sum(native > PIXEL_LOGIT, axis=(1, 2)),
          'probability': jax.nn.sigmoid(jnp.max(native, axis=(1, 2)))}


def native_pixel_probability(model, variables: dict, preprocessing: Preprocessing, images: jax.Array,
                             flip_average: bool = False) -> jax.Array:
  """Images [B, 256, 256, C] uint8 -> a segmenter's pixel tumor probabilities [B, 256, 256] at the
  slices' native resolution (logits resized; flip-averaged first when asked): what mask rules read."""
  x, _ = apply_preprocessing(preprocessing, None, images, train=False)
  logits = model.apply(variables, x, flip_average, method='mask_logits')
  return jax.nn.sigmoid(native_logits(logits, images.shape[1]))


def pixels_to_slice_probability(pixel_probability):
  """A segmenter's slice tumor probability [N]: its largest pixel probability ([N, H, W] in)."""
  return pixel_probability.max(axis=(1, 2))


def model_resolution_masks(mask_probability: np.ndarray) -> np.ndarray:
  """Masks at the model's resolution by the default rule (before a run has chosen its own)."""
  return np.asarray(mask_probability) > PIXEL_THRESHOLD


@dataclasses.dataclass
class Decisions:
  label: np.ndarray  # [N] int, 1 = tumor
  mask: np.ndarray | None  # [N, H, W] bool, with a segmenter


def slice_decisions(probability: np.ndarray, threshold: float | None = None, pixels: np.ndarray | None = None,
                    rule: MaskRule | None = None, stacks: np.ndarray | None = None,
                    gate: float | None = None) -> Decisions:
  """The labels and masks of N slices.

  `threshold` given: label = probability >= threshold (a classifier's rule). `pixels` [N, H, W]
  given: masks = `rule` applied per patient stack (`stacks` [N], consecutive equal entries; None:
  every slice alone), emptied where probability < `gate` (None: no gate); without a threshold the
  label is whether the mask has a tumor pixel (a segmenter's rule).
  """
  if threshold is None and pixels is None:
    raise ValueError('slice_decisions needs a threshold, pixel probabilities, or both')
  masks = None
  if pixels is not None:
    stacks = np.arange(len(pixels)) if stacks is None else np.asarray(stacks)
    masks = gated_masks(apply_rule(rule or MaskRule(), pixels, stacks), probability, gate)
  label = np.asarray(probability) >= threshold if threshold is not None else masks.any(axis=(1, 2))
  return Decisions(label.astype(int), masks)


def gated_masks(masks: np.ndarray, probability: np.ndarray, gate: float | None) -> np.ndarray:
  """`masks` [N, H, W] emptied on the slices whose classifier `probability` [N] is below `gate`
  (None: unchanged)."""
  return masks if gate is None else masks & (np.asarray(probability) >= gate)[:, None, None]


@dataclasses.dataclass
class Scores:
  """What a `Scorer` gives for N slices."""
  probability: np.ndarray  # [N] tumor probability
  label: np.ndarray  # [N] 1 = tumor
  heatmap: np.ndarray | None  # [N, h, w] Grad-CAM, with a classifier alone
  mask: np.ndarray | None  # [N, 256, 256] bool, with a segmenter: post-processed by its stored rule
  spread: np.ndarray | None = None  # [N] with an ensemble: the members' standard deviation of `probability`
  mask_disagreement: np.ndarray | None = None  # [N] with a segmenter ensemble: `mask_disagreement`
  label_disputed: np.ndarray | None = None  # [N] bool with an ensemble: its members' own labels differ
  classifier_probability: np.ndarray | None = None  # [N] with both (or a segmenter's own detector): each model's own
  segmenter_probability: np.ndarray | None = None
  pixel_probability: np.ndarray | None = None  # [N, 256, 256] when asked (`maps`): the segmenter's, before its rule
  pixel_spread: np.ndarray | None = None  # [N, 256, 256] when asked, with a segmenter ensemble: its members' std


def member_spread(member_probabilities: np.ndarray) -> np.ndarray | None:
  """[M, N] members' slice probabilities -> their standard deviation per slice [N] (population,
  ddof 0: the members are the whole ensemble, not a sample of it); None for one model."""
  member_probabilities = np.asarray(member_probabilities)
  return member_probabilities.std(axis=0) if len(member_probabilities) > 1 else None


def mask_disagreement(member_masks: np.ndarray) -> np.ndarray:
  """[M, N, H, W] members' masks -> per slice, the share of the union of their masks on which they
  disagree (pixels some members call tumor and others not); 0 where no member has a tumor pixel."""
  union, agreed = member_masks.any(axis=0), member_masks.all(axis=0)
  size = union.sum(axis=(1, 2))
  return np.where(size > 0, (union & ~agreed).sum(axis=(1, 2)) / np.maximum(size, 1), 0.0)


class Scorer:
  """A classifier run and/or a segmenter run, jitted once, scoring uint8 slices [N, 256, 256, 3].

  The probability and label are the classifier's (its stored threshold); with a segmenter too, the
  classifier gates the masks: a slice whose probability is below the gate chosen for the pair on
  validation (`jaxbrain gate`; else the classifier's threshold) gets an empty mask. With a segmenter alone
  the probability is the segmenter's slice-level tumor probability: its largest pixel probability
  at the native 256x256 (flip-averaged when its rule says so); the label says whether the slice's
  post-processed mask has a tumor pixel. Masks follow the segmenter's stored `MaskRule`, applied per
  patient stack. Heatmaps come with a classifier alone.
  """

  def __init__(self, run_dir: str | Path | None, seg_run_dir: str | Path | None = None,
               batch_size: int = INFERENCE.batch_size):
    if run_dir is None and seg_run_dir is None:
      raise RunError('nothing to score with: give a classification run (--run), a segmentation run (--seg-run), '
                     'or both')
    self.classifier = load(run_dir, 'classify') if run_dir else None
    self.segmenter = load(seg_run_dir, 'segment') if seg_run_dir else None
    self.batch_size = batch_size
    self.gate, self.gate_source = None, None  # masks are emptied where the classifier's probability < gate
    # How "is there a tumor?" is answered: a pair's decisions.Detector chosen on validation, or a
    # segmenter's own (chosen among those that need no classifier); None: each model's own labels.
    self.detector = None if self.classifier else getattr(self.segmenter, 'detector', None)
    if self.classifier and self.segmenter:
      chosen = read_gate(self.segmenter, self.classifier)
      if chosen is not None:
        self.detector = chosen.detector
      if chosen is None:
        self.gate = self.classifier.label_threshold
        self.gate_source = ('the classifier\'s threshold: no gate was chosen on validation for these two runs '
                            '(jaxbrain gate chooses one)')
      else:
        self.gate = chosen.gate
        self.gate_source = f'chosen on validation patients ({gate_path(self.segmenter, self.classifier)})'
    self._classify = jax.jit(self._classify_batch)
    self._segment = jax.jit(self._segment_batch, static_argnums=1)
    self._segmenter_weights = stacked_weights(self.segmenter) if self.segmenter else None

  @property
  def runs(self) -> list[LoadedRun]:
    return [run for run in (self.classifier, self.segmenter) if run is not None]

  @property
  def threshold(self) -> float:
    """The decision threshold of the run that gives the probability."""
    return (self.classifier or self.segmenter).label_threshold

  @property
  def label_threshold(self) -> float:
    """The probability at or above which a slice is labelled tumor: the pair's chosen detector's cut,
    else the threshold of the run that gives the probability."""
    return self.threshold if self.detector is None else self.detector.label_threshold(self.threshold)

  @property
  def description(self) -> str:
    """How labels and masks come about, in a sentence or three (for pages)."""
    both_heads = self.classifier and self.classifier.config.task.score_with_mask_head
    how = ' (the geometric mean of its classifier and mask heads)' if both_heads else ''
    if self.segmenter is None:
      return f'Label: the classifier\'s probability{how} >= {self.threshold:g}.'
    context = self.segmenter.config.task.context_slices
    seen = f' (each slice seen with {context} neighbouring slice(s) on either side)' if context else ''
    seen += ' (each patient\'s scan rescaled to one intensity scale)' if self.segmenter.config.task.scale_volumes else ''
    masks = (f'Masks: the segmenter\'s{seen}, post-processed by the rule chosen on validation '
             f'({self.segmenter.mask_rule.in_words()}).')
    if self.classifier is None:
      return f'{self._detector_words()}. {masks}'
    gate = 'no gate' if self.gate is None else f'emptied where the classifier\'s probability < {self.gate:g}'
    if self.detector is None:
      label = (f'Probability and label: the classifier\'s{how}, >= {self.threshold:g} (no detector was chosen on '
               'validation for this pair: jaxbrain gate chooses one)')
    else:
      label = self._detector_words()
    return f'{label}. {masks} Gate: {gate} ({self.gate_source}).'

  def _detector_words(self) -> str:
    """The label's source (`Detector.in_words`); a segmenter alone with none chosen: its own labels."""
    detector = self.detector or Detector('segmenter')
    chosen = ' (chosen on validation by jaxbrain gate)' if self.detector else ''
    return f'Label: {detector.in_words(self.threshold if self.classifier else None)}{chosen}'

  def _classify_batch(self, batch):
    """Each member's tumor probability [M, B] (a single run is one member) and, for a classifier
    alone, the members' mean Grad-CAM heatmap."""
    members = self.classifier.members or (self.classifier,)
    probability = jnp.stack([slice_probability(r.model, r.variables, r.preprocessing, batch, r.config.task.flip_average,
                                               r.config.task.score_with_mask_head) for r in members])
    if self.segmenter is not None:
      return probability, None
    return probability, jnp.mean(jnp.stack([slice_heatmaps(r.model, r.variables, r.preprocessing, batch)
                                            for r in members]), axis=0)

  def _segment_batch(self, batch, flip_average: bool, weights: dict):
    """Each member's native pixel probabilities [M, B, 256, 256] (flip-averaged when asked), the
    members' `weights` stacked on a leading axis and run one after another by one traced program
    (`lax.map`): the same numbers as a program per member, traced and cache-keyed once."""
    first = (self.segmenter.members or (self.segmenter,))[0]
    return jax.lax.map(lambda variables: native_pixel_probability(first.model, variables, first.preprocessing, batch,
                                                                  flip_average), weights)

  def _member_pixels(self, images: np.ndarray, stacks: np.ndarray, flip_average: bool) -> np.ndarray:
    """The segmenter's members' native pixel probabilities [M, N, 256, 256] of slices `images`."""
    task = self.segmenter.config.task
    inputs = segmenter_inputs(images, stacks, task.context_slices, task.scale_volumes)
    return np.concatenate([np.asarray(self._segment(padded(inputs[start:start + self.batch_size], self.batch_size),
                                                    flip_average, self._segmenter_weights))[
                               :, :len(inputs[start:start + self.batch_size])]
                           for start in range(0, len(inputs), self.batch_size)], axis=1)

  def pixel_probability(self, images: np.ndarray, patients: Sequence, flip_average: bool) -> np.ndarray:
    """The segmenter's (an ensemble's: its members' mean) native pixel probabilities [N, 256, 256]
    before post-processing, with or without flip averaging: what a mask rule is chosen on."""
    return self._member_pixels(images, np.asarray(patients), flip_average).mean(axis=0)

  def score(self, images: np.ndarray, patients: Sequence | None = None, gated: bool = True,
            maps: bool = False) -> Scores:
    """Scores slices `images`; `patients` [N] groups them into stacks (consecutive equal entries, in
    slice order) for the segmenter's neighbouring slices (2.5D input) and 3D post-processing; without
    it every slice is a stack of one.
    `gated=False` leaves the masks ungated (to choose a gate); `maps=True` also returns the
    segmenter's pixel probabilities (and its members' spread) for volumes to be written.

    An ensemble's probability is the mean of its members' probabilities (a classifier's slice
    probabilities; a segmenter's pixel probabilities, before post-processing), averaged as
    probabilities rather than logits: each member's decisions were made on probabilities, and a
    mean of logits lets one over-confident member outvote the rest. `spread` is the members'
    standard deviation of the probability that gives the answer, `mask_disagreement` the share of
    the union of the members' masks (each by the ensemble's rule) on which they disagree, and
    `label_disputed` marks slices whose members' own labels differ (each member's probability
    against the ensemble's threshold; a segmenter member's mask by the ensemble's rule)."""
    stacks = np.arange(len(images)) if patients is None else np.asarray(patients)
    rule = self.segmenter.mask_rule if self.segmenter else None
    member_pixels = self._member_pixels(images, stacks, rule.flip_average) if self.segmenter else None
    pixel = member_pixels.mean(axis=0) if self.segmenter else None
    classified, heatmaps = [], []
    for start in range(0, len(images) if self.classifier else 0, self.batch_size):
      count = len(images[start:start + self.batch_size])
      probability, heatmap = self._classify(padded(images[start:start + self.batch_size], self.batch_size))
      classified.append(np.asarray(probability)[:, :count])
      if heatmap is not None:
        heatmaps.append(np.asarray(heatmap)[:count])
    if self.classifier:
      members = np.concatenate(classified, axis=1)
    else:
      members = pixels_to_slice_probability(member_pixels.reshape(-1, *member_pixels.shape[2:])).reshape(
          member_pixels.shape[:2])
    probability = members.mean(axis=0) if self.classifier else pixels_to_slice_probability(pixel)
    decided = slice_decisions(probability, self.classifier.label_threshold if self.classifier else None, pixel, rule,
                              stacks)  # masks ungated: a detector reads the segmenter's own labels
    label, mask, parts = decided.label, decided.mask, (None, None)
    if self.classifier and self.segmenter:
      parts = probability, pixels_to_slice_probability(pixel)
      if self.detector is not None:
        probability, label = detect(self.detector, *parts, mask.any(axis=(1, 2)), stacks, self.classifier.label_threshold)
      mask = gated_masks(mask, parts[0], self.gate if gated else None)
    elif self.segmenter and self.detector is not None:  # a segmenter's own detector
      parts = None, probability
      probability, label = detect(self.detector, None, probability, label, stacks, self.threshold)
    disagreement, member_labels = None, None
    if self.segmenter and len(member_pixels) > 1:
      member_masks = np.stack([apply_rule(rule, p, stacks) for p in member_pixels])
      disagreement = mask_disagreement(member_masks)
      member_labels = member_masks.any(axis=(2, 3))
    if self.classifier and len(members) > 1:
      member_labels = members >= self.classifier.label_threshold
    disputed = None if member_labels is None else member_labels.any(axis=0) & ~member_labels.all(axis=0)
    pixel_maps = (None, None)
    if maps and self.segmenter:
      pixel_maps = pixel, member_pixels.std(axis=0) if len(member_pixels) > 1 else None
    return Scores(probability, label, np.concatenate(heatmaps) if heatmaps else None, mask,
                  member_spread(members), disagreement, disputed, *parts, *pixel_maps)


def stacked_weights(run: LoadedRun) -> dict:
  """The variables of a run's members (a single run: itself) stacked on a leading axis, on the
  device; refuses members whose architectures differ, naming the first that does."""
  members = run.members or (run,)
  shapes = [jax.tree.map(np.shape, member.variables) for member in members]
  for member, shape in zip(members, shapes):
    if member.config.model != members[0].config.model or shape != shapes[0]:
      raise RunError(f'{member.directory}: is another architecture than {members[0].directory} '
                     f'({member.config.describe()}); the members of an ensemble are runs of one recipe')
  return jax.device_put(jax.tree.map(lambda *leaves: np.stack([np.asarray(leaf) for leaf in leaves]),
                                     *[member.variables for member in members]))


def padded(chunk: np.ndarray, batch_size: int) -> np.ndarray:
  """`chunk` with its first row repeated up to `batch_size` rows, or up to half of it where it fits
  there: at most two shapes for the jitted steps, and a short last chunk (a single patient's
  remainder) does not pay for a whole batch."""
  half = max(batch_size // 2, 1)
  size = half if len(chunk) <= half else batch_size
  return np.concatenate([chunk, np.repeat(chunk[:1], size - len(chunk), 0)])
