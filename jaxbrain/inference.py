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

from jaxbrain.config import INFERENCE
from jaxbrain.data.arrays import segmenter_inputs
from jaxbrain.data.transforms import Preprocessing, apply_preprocessing, native_logits
from jaxbrain.models.gradcam import gradcam
from jaxbrain.postprocess import PIXEL_THRESHOLD, MaskRule, apply_rule
from jaxbrain.runs import LoadedRun, RunError, gate_path, load_run, read_gate

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
    masks = apply_rule(rule or MaskRule(), pixels, stacks)
    if gate is not None:
      masks &= (np.asarray(probability) >= gate)[:, None, None]
  label = np.asarray(probability) >= threshold if threshold is not None else masks.any(axis=(1, 2))
  return Decisions(label.astype(int), masks)


@dataclasses.dataclass
class Scores:
  """What a `Scorer` gives for N slices."""
  probability: np.ndarray  # [N] tumor probability
  label: np.ndarray  # [N] 1 = tumor
  heatmap: np.ndarray | None  # [N, h, w] Grad-CAM, with a classifier alone
  mask: np.ndarray | None  # [N, 256, 256] bool, with a segmenter: post-processed by its stored rule


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
    self.classifier = load_run(run_dir, 'classify') if run_dir else None
    self.segmenter = load_run(seg_run_dir, 'segment') if seg_run_dir else None
    self.batch_size = batch_size
    self.gate, self.gate_source = None, None  # masks are emptied where the classifier's probability < gate
    if self.classifier and self.segmenter:
      chosen = read_gate(self.segmenter, self.classifier)
      if chosen is None:
        self.gate = self.classifier.threshold
        self.gate_source = ('the classifier\'s threshold: no gate was chosen on validation for these two runs '
                            '(jaxbrain gate chooses one)')
      else:
        self.gate = chosen['gate']
        self.gate_source = f'chosen on validation patients ({gate_path(self.segmenter, self.classifier)})'
    self._classify = jax.jit(self._classify_batch)
    self._segment = jax.jit(self._segment_batch)

  @property
  def runs(self) -> list[LoadedRun]:
    return [run for run in (self.classifier, self.segmenter) if run is not None]

  @property
  def threshold(self) -> float:
    """The decision threshold of the run that gives the probability."""
    return (self.classifier or self.segmenter).threshold

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
    masks = f'Masks: the segmenter\'s{seen}, post-processed by its stored rule ({self.segmenter.mask_rule}).'
    if self.classifier is None:
      return f'Label: the mask has a tumor pixel. {masks}'
    gate = 'no gate' if self.gate is None else f'emptied where the classifier\'s probability < {self.gate:g}'
    return (f'Label: the classifier\'s probability{how} >= {self.threshold:g}. {masks} Gate: {gate} '
            f'({self.gate_source}).')

  def _classify_batch(self, batch):
    run = self.classifier
    probability = slice_probability(run.model, run.variables, run.preprocessing, batch, run.config.task.flip_average,
                                    run.config.task.score_with_mask_head)
    if self.segmenter is not None:
      return probability, None
    return probability, slice_heatmaps(run.model, run.variables, run.preprocessing, batch)

  def _segment_batch(self, batch):
    run = self.segmenter
    native = native_pixel_probability(run.model, run.variables, run.preprocessing, batch, run.mask_rule.flip_average)
    return native, pixels_to_slice_probability(native)

  def score(self, images: np.ndarray, patients: Sequence | None = None, gated: bool = True) -> Scores:
    """Scores slices `images`; `patients` [N] groups them into stacks (consecutive equal entries, in
    slice order) for the segmenter's neighbouring slices (2.5D input) and 3D post-processing; without
    it every slice is a stack of one.
    `gated=False` leaves the masks ungated (to choose a gate)."""
    stacks = np.arange(len(images)) if patients is None else np.asarray(patients)
    task = self.segmenter.config.task if self.segmenter else None
    inputs = segmenter_inputs(images, stacks, task.context_slices, task.scale_volumes) if task else None
    probabilities, heatmaps, pixels = [], [], []
    for start in range(0, len(images), self.batch_size):
      chunk = images[start:start + self.batch_size]
      if self.segmenter:
        pixel, probability = self._segment(padded(inputs[start:start + self.batch_size], self.batch_size))
        pixels.append(np.asarray(pixel)[:len(chunk)])
      if self.classifier:
        probability, heatmap = self._classify(padded(chunk, self.batch_size))
        if heatmap is not None:
          heatmaps.append(np.asarray(heatmap)[:len(chunk)])
      probabilities.append(np.asarray(probability)[:len(chunk)])
    probability = np.concatenate(probabilities)
    decided = slice_decisions(
        probability, self.classifier.threshold if self.classifier else None,
        np.concatenate(pixels) if self.segmenter else None, self.segmenter.mask_rule if self.segmenter else None,
        stacks, self.gate if gated else None)
    return Scores(probability, decided.label, np.concatenate(heatmaps) if heatmaps else None, decided.mask)


def padded(chunk: np.ndarray, size: int) -> np.ndarray:
  """`chunk` with its first row repeated up to `size` rows: one shape for the jitted steps."""
  return np.concatenate([chunk, np.repeat(chunk[:1], size - len(chunk), 0)])
