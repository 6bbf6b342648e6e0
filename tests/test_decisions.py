"""A run's decisions (`jaxbrain/decisions.py`): decision.json read and written by one owner. The
choosing functions are tested in tests/test_postprocess.py, beside the masks they choose for."""
import json

from jaxbrain.decisions import Decision, write_decision
from jaxbrain.folders import RunDir
from jaxbrain.postprocess import MaskRule

# decision.json as jaxbrain 0.1.0 wrote it before `Decision` existed (written by hand in train/tasks.py
# and localize/ensemble.py): a segmentation run, a classification run, an ensemble member's copy.
WRITTEN_BEFORE = [
    {'threshold': 0.4, 'threshold_chosen_on': 'the mask rule: a slice is labelled tumor when its post-processed mask '
     'is not empty', 'mask_rule': {'threshold': 0.4, 'min_pixels': 64, 'drop_single_slice': True, 'flip_average': False},
     'mask_rule_chosen_on': 'validation patients (12): mean per-volume Dice at 256x256, of the rules in mask_rules.csv',
     'validation_dice_per_volume_native': {'default_rule': 0.71, 'chosen_rule': 0.74}, 'checkpoint': 'best/7880'},
    {'threshold': 0.5, 'threshold_chosen_on': 'fixed default', 'checkpoint': 'best/76'},
    {'threshold': 0.5, 'threshold_chosen_on': 'fixed default, as a single classifier\'s', 'checkpoint': 'members/0'},
]


def test_decision_files_written_before_read_and_write_back_unchanged(tmp_path):
  """Catches a run folder of the earlier code that no longer loads (a renamed or dropped key), a
  segmenter's pixel threshold read as anything but its rule's, and a writer whose file differs from
  what the earlier code wrote for the same decisions (key order included)."""
  for k, record in enumerate(WRITTEN_BEFORE):
    decision = Decision.from_json(record)
    assert decision.to_json() == record and list(decision.to_json()) == list(record)
    run = RunDir(tmp_path / str(k))
    run.path.mkdir()
    write_decision(run, decision)
    assert run.decision.read_text() == json.dumps(record, indent=2) + '\n'
  segmenter = Decision.from_json(WRITTEN_BEFORE[0])
  assert segmenter.mask_rule == MaskRule(0.4, 64, True, False) and segmenter.threshold == segmenter.mask_rule.threshold


def test_a_segmenters_decision_states_its_labelling_once():
  """Catches the sentence that says how a segmenter labels a slice written out in two places (a
  run's and an ensemble's decisions drifting apart)."""
  rule = MaskRule(0.3, 16)
  assert Decision.by_mask_rule(rule, 'A').threshold_chosen_on == Decision.by_mask_rule(rule, 'B').threshold_chosen_on
  assert Decision.by_mask_rule(rule, 'A').to_json()['mask_rule'] == {'threshold': 0.3, 'min_pixels': 16,
                                                                      'drop_single_slice': False, 'flip_average': False}


def test_a_gate_file_reads_as_what_was_chosen():
  """Catches a gate file's choices read as a dict whose fields each reader spells (a missing
  detector read as a detector, a stored null gate read as the classifier's threshold)."""
  from jaxbrain.decisions import Detector, GateChoice

  chosen = GateChoice.from_json({'gate': None, 'detector': {'combination': 'mean', 'smoothing': 1, 'threshold': 0.4},
                                 'test': {}})
  assert chosen == GateChoice(None, Detector('mean', 1, 0.4))
  assert GateChoice.from_json({'gate': 0.3}) == GateChoice(0.3, None)


def test_a_detector_reads_in_one_wording_without_missing_values():
  """Catches a detector put into words by pages and model cards separately (the two drifting
  apart), or printed with its empty parts ("averaged over 0 neighbouring slices", "at >= None")."""
  from jaxbrain.decisions import Detector

  assert Detector('segmenter').in_words() == 'the segmenter\'s own labels: a slice is tumour when its mask is not empty'
  assert Detector('classifier').in_words(0.35).endswith('>= 0.35')
  assert 'its own threshold' in Detector('classifier').in_words()
  combined = Detector('mean', 1, 0.45).in_words(0.35)
  assert 'averaged over 1 neighbouring slice(s)' in combined and combined.endswith('>= 0.45')
  assert 'averaged' not in Detector('geometric', 0, 0.3).in_words()
  for words in (Detector('segmenter').in_words(), Detector('mean', 0, 0.5).in_words()):
    assert 'None' not in words and 'over 0' not in words
