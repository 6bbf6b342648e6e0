"""What a segmentation run decides on validation and stores for `predict`."""
import csv
import dataclasses
import json

from jaxbrain.decisions import MARGIN
from jaxbrain.postprocess import MaskRule


def test_segmentation_run_stores_the_best_mask_rule_of_its_validation_table(trained_runs):
  """Catches: a run whose stored rule is not the best of the rules it tried on validation (first
  on a tie; the default unless the best gains MARGIN over it), a table or test metric that goes
  missing, and test slices written without the rule (test_predictions.csv must count the
  post-processed masks' pixels)."""
  _, segmenter = trained_runs
  decision = json.loads((segmenter / 'decision.json').read_text())
  with open(segmenter / 'mask_rules.csv') as f:
    tried = list(csv.DictReader(f))
  assert len(tried) == 2 * 5 * 6 * 2
  rule = lambda row: MaskRule(float(row['threshold']), int(row['min_pixels']),  # noqa: E731
                              row['drop_single_slice'] == 'True', row['flip_average'] == 'True')
  best = max(tried, key=lambda row: float(row['dice_per_volume']))  # max keeps the first of equals
  default = next(row for row in tried if rule(row) == MaskRule())
  if float(best['dice_per_volume']) < float(default['dice_per_volume']) + MARGIN:
    best = default
  assert decision['mask_rule'] == dataclasses.asdict(rule(best))
  assert decision['threshold'] == rule(best).threshold
  chosen = decision['validation_dice_per_volume_native']
  assert chosen['chosen_rule'] == float(best['dice_per_volume']) >= chosen['default_rule']
  metrics = json.loads((segmenter / 'metrics.json').read_text())
  for name in ('native', 'native_postprocessed'):
    assert 0 <= metrics[name]['dice_per_volume'] <= 1 and 'false_positive_rate' in metrics[name]
  with open(segmenter / 'test_predictions.csv') as f:
    rows = list(csv.DictReader(f))
  assert all(row['label'] == str(int(int(row['tumor_pixels']) > 0)) for row in rows)
