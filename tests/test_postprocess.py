import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from jaxbrain.metrics import segmentation_counts, segmentation_metrics_from_counts
from jaxbrain.decisions import (DETECTION_THRESHOLDS, DETECTORS, SMOOTHING, Detector, choose_detector, choose_gate,
                                choose_rule, detect, gated_counts, most_accurate_threshold, pipeline_metrics,
                                smoothed_along_slices)
from jaxbrain.postprocess import MaskRule, apply_rule, remove_single_slice_components, remove_small_components


def _stack(n: int, size: int = 16) -> np.ndarray:
  return np.zeros((n, size, size), bool)


def test_small_components_are_removed_in_plane_with_diagonal_neighbours():
  """Catches: 4-connectivity (the diagonal line of 10 pixels would fall apart and vanish), counting
  a component across slices (the two 6-pixel squares on slices 0 and 1 would make 12 and stay), and
  a size test off by one (the 10-pixel line has exactly min_pixels)."""
  masks = _stack(2)
  masks[0, np.arange(10), np.arange(10)] = True  # 10 pixels, 8-connected only
  masks[0, 12:14, 12:15] = True  # 6 pixels
  masks[1, 12:14, 12:15] = True  # the same 6 pixels on the next slice
  kept = remove_small_components(masks, 10)
  assert kept[0, np.arange(10), np.arange(10)].all()
  assert not kept[:, 12:, 12:].any()


def test_components_on_one_slice_only_are_removed_and_touching_ones_kept():
  """Catches: removing a tumor that continues on the next slice only diagonally (26-connectivity),
  keeping a speck seen on one slice, and emptying a one-slice stack (no neighbour to ask)."""
  masks = _stack(4)
  masks[0, 2:4, 2:4] = True  # alone on slice 0
  masks[1, 8:10, 8:10] = True
  masks[2, 10, 10] = True  # touches slice 1's square at its corner only
  kept = remove_single_slice_components(masks)
  assert not kept[0].any()
  assert kept[1].sum() == 4 and kept[2, 10, 10]
  single = _stack(1)
  single[0, 3, 3] = True
  assert remove_single_slice_components(single)[0, 3, 3]


def test_apply_rule_keeps_patients_apart():
  """Catches: 3D consistency over the whole list of slices, which would join patient a's last slice
  to patient b's first (both tumors are on one slice of their own patient), and a threshold taken
  as >= instead of >."""
  probabilities = np.zeros((4, 16, 16), np.float32)
  probabilities[1, 4:8, 4:8] = 0.9  # patient a, last slice
  probabilities[2, 4:8, 4:8] = 0.9  # patient b, first slice
  probabilities[3, 0:2, 0:2] = 0.5  # exactly at the threshold: not tumor
  patients = np.array(['a', 'a', 'b', 'b'])
  assert not apply_rule(MaskRule(drop_single_slice=True), probabilities, patients).any()
  assert apply_rule(MaskRule(), probabilities, patients).sum() == 32


def _smooth_scene(seed: int):
  """Probabilities [12, 32, 32] of 4 patients (the last with one slice) with true tumors and specks
  of false positives, and the true masks."""
  rng = np.random.default_rng(seed)
  truth = np.zeros((12, 32, 32), bool)
  truth[1:3, 10:18, 10:18] = True
  truth[6:9, 4:12, 16:26] = True
  truth[11, 20:28, 4:12] = True
  noise = ndimage.gaussian_filter(rng.random((12, 32, 32)), (0, 1.5, 1.5))
  probabilities = np.clip(0.75 * truth + (noise - 0.5) * 6 + 0.1, 0, 1).astype(np.float32)
  return probabilities, truth, np.array(['p0'] * 4 + ['p1'] * 4 + ['p2'] * 3 + ['p3'])


def test_choose_rule_scores_each_rule_as_apply_rule_masks_it():
  """Catches: the component shortcut of `choose_rule` disagreeing with the masks `apply_rule`
  (what predict applies) gives for the same rule: a wrong size filter, single-slice test (one-slice
  stacks keep their masks) or per-slice sum, on any of the 240 rules of two scenes."""
  for seed in (0, 1):
    probabilities, truth, patients = _smooth_scene(seed)
    flipped = probabilities[:, :, ::-1] * 0.5 + probabilities * 0.5
    rule, rows = choose_rule({False: probabilities, True: flipped}, truth, patients)
    for row in rows:
      tried = MaskRule(**{f.name: row[f.name] for f in dataclasses.fields(MaskRule)})
      source = flipped if tried.flip_average else probabilities
      scores = segmentation_metrics_from_counts(segmentation_counts(apply_rule(tried, source, patients), truth),
                                                patients)
      assert np.isclose(row['dice_per_volume'], scores['dice_per_volume']), tried
      assert np.isclose(row['false_positive_rate'], scores['false_positive_rate']), tried
    assert max(r['dice_per_volume'] for r in rows) == next(
        r['dice_per_volume'] for r in rows if MaskRule(**{k: r[k] for k in dataclasses.asdict(rule)}) == rule)


def test_choose_rule_removes_false_specks_and_keeps_the_default_on_a_tie():
  """Catches: a choice that ignores the specks (the default rule would win), and a tie broken
  towards a more complex rule (clean probabilities: every rule scores 1, the default must stay)."""
  truth = _stack(6, 32)
  truth[1:4, 8:20, 8:20] = True
  probabilities = truth.astype(np.float32) * 0.9
  patients = np.repeat(['a', 'b'], 3)
  assert choose_rule({False: probabilities}, truth, patients)[0] == MaskRule()
  specks = probabilities.copy()
  specks[4, 25:27, 25:27] = 0.9  # a 4-pixel false positive on a tumor-free slice of patient b
  rule, _ = choose_rule({False: specks}, truth, patients)
  assert rule != MaskRule() and not apply_rule(rule, specks, patients)[4].any()


def test_gate_empties_low_probability_slices_and_is_chosen_only_when_it_helps():
  """Catches: a gate that empties slices at or above it (>= is kept), counts that lose the true
  pixels of gated slices (their Dice must fall), and a gate chosen where no gate scores as well."""
  patients = np.array(['a', 'a', 'b', 'b'])
  # slice 1: a true tumor found; slice 3: a false mask on a tumor-free slice of patient b
  counts = {'intersection': np.array([0, 50, 0, 0]), 'predicted': np.array([0, 60, 0, 30]),
            'true': np.array([0, 55, 0, 0]), 'union': np.array([0, 65, 0, 30])}
  probability = np.array([0.1, 0.9, 0.2, 0.3])
  gated = gated_counts(counts, probability, 0.3)
  assert gated['predicted'].tolist() == [0, 60, 0, 30] and gated_counts(counts, probability, 0.31)['predicted'][3] == 0
  gate, rows = choose_gate(counts, probability, patients)
  assert gate is not None and 0.3 < gate <= 0.9 and rows[0]['gate'] is None
  assert pipeline_metrics(gated_counts(counts, probability, 0.95), patients)['dice_per_volume'] < 0.6
  clean = {**counts, 'predicted': np.array([0, 60, 0, 0]), 'union': np.array([0, 65, 0, 0])}
  assert choose_gate(clean, probability, patients)[0] is None


def test_a_gain_below_the_margin_keeps_the_plain_choice():
  """Catches: a gate (or rule) adopted for a gain that is noise on the validation patients: removing
  one false mask among n one-slice patients gains 1/n mean per-volume Dice; n = 100 clears
  MARGIN (0.005), n = 300 does not."""
  for patients_count, gated in ((100, True), (300, False)):
    n = patients_count
    counts = {'intersection': np.full(n, 40), 'predicted': np.full(n, 40), 'true': np.full(n, 40),
              'union': np.full(n, 40)}
    counts['intersection'][0], counts['true'][0], counts['union'][0] = 0, 0, 40  # a false mask, tumor-free slice
    probability = np.ones(n)
    probability[0] = 0.2
    gate, _ = choose_gate(counts, probability, np.arange(n))
    assert (gate is not None) == gated


def test_the_detector_is_chosen_on_the_slices_given_and_keeps_the_classifier_unless_another_clearly_wins():
  """Catches a detector chosen by anything but the given (validation) slices, a combination adopted
  for a gain below the margin, smoothing that crosses from one patient to the next, and a segmenter
  detector whose label is not its mask's."""
  rng = np.random.default_rng(0)
  labels = np.tile([0, 0, 1, 1, 1, 0, 0, 0], 6)
  stacks = np.repeat([f'P{k}' for k in range(6)], 8)
  noisy = np.clip(labels * 0.3 + rng.random(len(labels)) * 0.7, 0, 1)  # a weak classifier
  sharp = np.where(labels == 1, 0.9, 0.1)  # a segmenter that ranks every slice right
  masks = labels.astype(bool)
  detector, rows = choose_detector(labels, noisy, sharp, masks, stacks, 0.5)
  assert detector.combination == 'segmenter' and len(rows) == len(DETECTORS) * len(SMOOTHING)
  probability, label = detect(Detector('segmenter'), noisy, sharp, ~masks, stacks, 0.5)
  np.testing.assert_array_equal(label, (~masks).astype(int))
  same, _ = choose_detector(labels, sharp, sharp, masks, stacks, 0.5)
  assert same == Detector()  # ties (and gains below the margin) keep the classifier alone
  smoothed = smoothed_along_slices(np.array([0, 0, 1, 1, 0, 0.0]), np.array(['a', 'a', 'a', 'b', 'b', 'b']), 1)
  np.testing.assert_allclose(smoothed, [0, 1 / 3, 1 / 2, 1 / 2, 1 / 3, 0])


def test_the_pair_never_answers_worse_than_either_model_on_the_slices_it_was_chosen_on():
  """Catches a detector chosen by ROC AUC alone (the smoothed mean ranks these slices best but
  labels them worse than the segmenter), a combined detector labelled at the classifier's threshold
  instead of its most accurate one, and a combination that beats both models being passed over."""
  rng = np.random.default_rng(1)
  for trial in range(30):
    labels = (rng.random(96) < 0.4).astype(int)
    stacks = np.repeat([f'P{k}' for k in range(8)], 12)
    classifier = np.clip(labels * rng.uniform(0.2, 0.6) + rng.random(96) * 0.6, 0, 1)
    segmenter = np.clip(labels * rng.uniform(0.2, 0.6) + rng.random(96) * 0.6, 0, 1)
    masks = segmenter >= rng.uniform(0.3, 0.7)
    detector, rows = choose_detector(labels, classifier, segmenter, masks, stacks, 0.5)
    chosen = next(row for row in rows if Detector.from_json(row) == detector)
    alone = [row for row in rows if Detector.from_json(row).is_one_model]
    if any(row['roc_auc'] >= max(a['roc_auc'] for a in alone) and row['accuracy'] >= max(a['accuracy'] for a in alone)
           for row in rows):
      for key in ('roc_auc', 'accuracy'):
        assert chosen[key] >= max(row[key] for row in alone), (trial, key)
    else:
      assert chosen['accuracy'] == max(row['accuracy'] for row in alone)
    probability, label = detect(detector, classifier, segmenter, masks, stacks, 0.5)
    if not detector.is_one_model:
      assert detector.threshold == most_accurate_threshold(labels, probability, 0.5)
      np.testing.assert_array_equal(label, probability >= detector.threshold)
  # both models noisy in their own ways: their mean beats each on both figures and is chosen
  labels = np.tile([0, 0, 1, 1, 1, 0, 0, 0], 12)
  stacks = np.repeat([f'P{k}' for k in range(12)], 8)
  classifier, segmenter = (np.clip(labels * 0.4 + rng.random(len(labels)) * 0.6, 0, 1) for _ in range(2))
  detector, rows = choose_detector(labels, classifier, segmenter, segmenter >= 0.5, stacks, 0.5)
  assert not detector.is_one_model and detector.threshold in DETECTION_THRESHOLDS
  assert most_accurate_threshold([0, 1, 1], np.array([0.2, 0.5, 0.9]), 0.1) == 0.25  # 0.25-0.5 all right: nearest 0.1


def test_a_segmenters_own_detector_is_chosen_among_those_that_need_no_classifier():
  """Catches a segmenter alone offered a detector that reads a classifier (which it has not), and a
  smoothed probability adopted without beating the mask's own labels by the margin: a segmenter
  whose lone noisy slices smoothing removes gets the smoothed detector, one whose masks are right
  keeps its own labels."""
  labels = np.tile([0, 0, 1, 1, 1, 0, 0, 0], 6)
  stacks = np.repeat([f'P{k}' for k in range(6)], 8)
  noisy = np.where(labels == 1, 0.8, 0.2)
  noisy[::8] = 0.95  # a lone false alarm at each patient's first slice: smoothing over neighbours damps it
  detector, rows = choose_detector(labels, None, noisy, noisy >= 0.5, stacks, 0.5)
  assert {row['combination'] for row in rows} == {'segmenter'} and len(rows) == len(SMOOTHING)
  assert detector.combination == 'segmenter' and detector.smoothing == 1
  sharp = np.where(labels == 1, 0.9, 0.1)
  assert choose_detector(labels, None, sharp, sharp >= 0.5, stacks, 0.5)[0] == Detector('segmenter')
  with pytest.raises(ValueError, match='needs a classifier'):
    detect(Detector('mean'), None, sharp, sharp >= 0.5, stacks, 0.5)
