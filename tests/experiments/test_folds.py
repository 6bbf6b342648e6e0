import csv
import json

import pytest

from experiments import folds
from jaxbrain.errors import ConfigError


@pytest.mark.parametrize('flags', [['--fold', '1'], ['--resume'], ['--run-name=mine'], ['--overwrite'], []])
def test_folds_refuses_the_flags_it_sets_and_the_phantom_demo(flags):
  """Catches --run-name passed through (the five folds would share one folder, each clobbering the
  last), --fold passed through (one fold trained five times), --resume/--overwrite overriding the
  kept-or-resumed rule, and no --data-dir accepted (no patient folders to predict)."""
  with pytest.raises(ConfigError):
    folds.fold_configs('seg01', flags + (['--data-dir', '/data'] if flags else []))


class FakeProcess:
  """A fold's process that ends at once: fold 1 fails, the others succeed."""
  launched = []

  def __init__(self, command, stdout, stderr, env):
    FakeProcess.launched.append((command, env))
    self.returncode = 1 if command[command.index('--fold') + 1] == '1' else 0

  def poll(self):
    return self.returncode


def test_finished_folds_are_kept_unfinished_resumed_and_a_failure_named_after_the_rest(tmp_path, monkeypatch):
  """Catches a finished fold trained again (a rerun after an interruption would redo hours), an
  unfinished one started without --resume (the runner refuses a folder holding a run), stopping at
  the first failed fold (the folds after it never train), a failure passing silently, and the
  parallel folds each claiming the whole accelerator's memory."""
  runs = [tmp_path / f'fold{k}' for k in range(5)]
  for run in runs[:3]:
    run.mkdir()
  (runs[0] / 'decision.json').write_text(json.dumps({}))  # finished (runs.finished)
  (runs[1] / 'config.json').write_text('{}')  # interrupted in training
  (runs[2] / 'config.json').write_text('{}')  # interrupted in its test evaluation, after metrics.json
  (runs[2] / 'metrics.json').write_text(json.dumps({'test': {}}))
  monkeypatch.setattr(folds.subprocess, 'Popen', FakeProcess)
  monkeypatch.delenv('XLA_PYTHON_CLIENT_MEM_FRACTION', raising=False)
  with pytest.raises(folds.FoldsError, match=r'fold\(s\) 1 failed; see .*fold1\.txt') as raised:
    folds.train_folds('seg01', ['--data-dir', '/data'], runs, tmp_path / 'logs', parallel=2, poll_seconds=0)
  assert 'fold4' not in str(raised.value)
  launched = {command[command.index('--fold') + 1]: (command, env) for command, env in FakeProcess.launched}
  assert sorted(launched) == ['1', '2', '3', '4']
  assert ['--resume' in launched[k][0] for k in '1234'] == [True, True, False, False]
  assert {env['XLA_PYTHON_CLIENT_MEM_FRACTION'] for _, env in launched.values()} == {'0.45'}
  assert sorted(p.name for p in (tmp_path / 'logs').iterdir()) == [f'fold{k}.txt' for k in range(1, 5)]


def _patients(predictions_csv):
  with open(predictions_csv, newline='') as f:
    return {row['patient'] for row in csv.DictReader(f)}


def test_five_tiny_folds_score_every_patient_once_by_the_run_that_never_saw_it(phantom_runs_data, tmp_path, capsys):
  """Catches a fold's test patients predicted by another fold's run (one that trained on them), a
  patient missing from the pooled figure or scored twice, and a rerun that trains finished folds again."""
  flags = ['--data-dir', str(phantom_runs_data), '--workdir', str(tmp_path), '--image-size', '32', '--epochs', '1',
           '--unet-width', '4', '--batch-size', '4', '--bootstrap-samples', '0']
  assert folds.main(['seg01', '--parallel', '2', *flags]) == 0
  out = tmp_path / 'seg01' / 'patient-folds-scratch-32px-seed0'
  runs = [tmp_path / 'seg01' / f'patient-fold{k}-scratch-32px-seed0' for k in range(5)]
  tested = [set(json.loads((run / 'split.json').read_text())['test']) for run in runs]
  predicted = [_patients(out / 'predictions' / f'fold{k}' / 'predictions.csv') for k in range(5)]
  assert predicted == tested
  everyone = {p.name.rsplit('_', 1)[0] for p in phantom_runs_data.iterdir() if p.is_dir()}
  assert set().union(*tested) == everyone and sum(map(len, tested)) == len(everyone)
  result = json.loads((out / 'evaluate.json').read_text())
  assert result['patients'] == len(everyone) and 'dice_per_volume' in result['segmentation']
  finished = [(run / 'metrics.json').stat().st_mtime_ns for run in runs]
  capsys.readouterr()
  assert folds.main(['seg01', *flags]) == 0
  assert capsys.readouterr().out.count('finished before, kept') == 5
  assert [(run / 'metrics.json').stat().st_mtime_ns for run in runs] == finished


def test_members_mode_trains_five_members_and_writes_their_ensemble(phantom_runs_data, tmp_path, capsys):
  """`folds --members`: five members on the seed's training patients (each holding out its own
  fold), none trained or validated on the seed's validation (the decision set) or test patients,
  then the ensemble of the five with its decision-set figures; a rerun keeps both. Catches members
  given the seed's decision-set or test patients, an ensemble of fewer members, and a rerun that
  rebuilds the ensemble."""
  flags = ['--data-dir', str(phantom_runs_data), '--workdir', str(tmp_path), '--image-size', '32', '--epochs', '1',
           '--unet-width', '4', '--batch-size', '4', '--bootstrap-samples', '0']
  assert folds.main(['seg01', '--members', *flags]) == 0
  out = tmp_path / 'seg01' / 'patient-members-scratch-32px-seed0'
  splits = [json.loads((tmp_path / 'seg01' / f'patient-member{k}-scratch-32px-seed0' / 'split.json').read_text())
            for k in range(5)]
  decision_set, seed_test = set(splits[0]['test']), set(splits[0]['seed_test'])
  for split in splits:
    assert set(split['test']) == decision_set and set(split['seed_test']) == seed_test
    assert not (set(split['train']) | set(split['validation'])) & (decision_set | seed_test)
  assert set().union(*(set(s['validation']) for s in splits)) == set(splits[0]['train']) | set(splits[0]['validation'])
  ensemble = json.loads((out / 'ensemble' / 'ensemble.json').read_text())
  assert len(ensemble['members']) == 5 and (out / 'ensemble' / 'decision_set.json').is_file()
  written = (out / 'ensemble' / 'decision_set.json').stat().st_mtime_ns
  capsys.readouterr()
  assert folds.main(['seg01', '--members', *flags]) == 0
  assert 'the ensemble was written before, kept' in capsys.readouterr().out
  assert (out / 'ensemble' / 'decision_set.json').stat().st_mtime_ns == written
