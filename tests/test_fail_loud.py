"""Fail loud, lose nothing: each class of silent wrong answer, traceback and clobbered output, tried
as a user would (the entry points' `main`, exit code, message, earlier outputs intact)."""
import fcntl
import json
import shutil
import struct
import tempfile
import threading
import zlib
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from experiments import exp20
from jaxbrain import cli
from jaxbrain import spark as jspark
from jaxbrain.data import builder, kaggle3m, write_phantom
from jaxbrain.config import Config
from jaxbrain.train.loop import prepare_data

TINY = ['--init', 'scratch', '--image-size', '32', '--batch-size', '4', '--epochs', '1', '--learning-rate', '0.01',
        '--bootstrap-samples', '0', '--no-progress']


def experiment(data_dir, workdir, *flags):
  """`python -m experiments.exp20 ...` in-process: its exit code (0 on success)."""
  try:
    exp20.main(exp20.CONFIG, ['--data-dir', str(data_dir), '--workdir', str(workdir), *TINY, *flags])
  except SystemExit as e:
    return e.code
  return 0


def tree_copy(source: Path, tmp_path: Path) -> Path:
  return Path(shutil.copytree(source, tmp_path / 'data' / 'kaggle_3m'))


# 1. stale dataset cache ---------------------------------------------------------------------

def test_changed_data_is_rebuilt_not_read_stale(phantom_png, tmp_path):
  """Catches a dataset cache keyed by the folder's path alone: after a patient folder is deleted
  the next load must see one patient fewer (and another fingerprint), and a truncated image must
  fail the build naming the file, not train on the old pixels."""
  data_dir = tree_copy(phantom_png, tmp_path)
  config = Config.from_flags(data_dir=str(data_dir), workdir=str(tmp_path / 'work'))
  before, _, first = prepare_data(config)
  shutil.rmtree(next(p for p in sorted(data_dir.iterdir()) if p.is_dir()))
  after, _, second = prepare_data(config)
  assert len(set(after.patient)) == len(set(before.patient)) - 1 and first != second
  victim = kaggle3m.scan(data_dir)[0].image_path
  victim.write_bytes(victim.read_bytes()[:200])
  with pytest.raises(kaggle3m.DataError, match=f'{victim.name}: corrupt or truncated'):
    prepare_data(config)
  builds = [p for p in (tmp_path / 'work' / 'tfds').iterdir() if (p / 'lgg').is_dir()]
  assert builds == [builder.default_data_dir(data_dir, tmp_path / 'work' / 'tfds', second)]  # stale ones removed


def test_two_builds_of_one_dataset_take_turns(phantom_png, tmp_path):
  """Catches two processes writing one TFDS folder at once (no lock): both must get the whole set."""
  data_dir = tmp_path / 'cache'
  results, errors = [], []

  def build():
    try:
      results.append(len(builder.load_dataset(phantom_png, data_dir)))
    except Exception as e:  # noqa: BLE001
      errors.append(e)

  threads = [threading.Thread(target=build) for _ in range(2)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert not errors and results == [len(kaggle3m.scan(phantom_png))] * 2


# 2. non-finite training ---------------------------------------------------------------------

def test_diverging_training_stops_with_the_epoch_and_step(phantom_png, tmp_path, capsys):
  """Catches a run that trains on with NaN loss, records AUC 0.5 and saves the model as `best`."""
  assert experiment(phantom_png, tmp_path, '--learning-rate', '1e12', '--run-name', 'diverged') == 2
  err = capsys.readouterr().err
  assert 'training diverged at epoch 1, step' in err and '--learning-rate' in err
  run = tmp_path / 'exp20' / 'diverged'
  assert not (run / 'metrics.json').exists() and not list((run / 'checkpoints' / 'best').glob('[0-9]*'))


# 3. NaN probabilities never become "no tumor" -------------------------------------------------

def poisoned_copy(run: Path, tmp_path: Path) -> Path:
  copy = Path(shutil.copytree(run, tmp_path / 'poisoned'))
  folder = copy / 'checkpoints' / json.loads((copy / 'decision.json').read_text())['checkpoint'] / 'state'
  state = ocp.StandardCheckpointer().restore(folder.resolve())
  head = (state.get('ema') or state)['params']['head']  # the weights predict uses: the average if the run kept one
  first = sorted(head)[0]
  head[first]['kernel'] = np.full_like(head[first]['kernel'], np.nan)
  shutil.rmtree(folder)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(folder.resolve(), state)
  return copy


def test_predict_and_spark_refuse_non_finite_weights(trained_runs, phantom_png, tmp_path, capsys):
  """Catches `int(nan >= 0.5) == 0`: a run with NaN weights labelling every slice "no tumor"."""
  poisoned = poisoned_copy(trained_runs[0], tmp_path)
  assert cli.main(['predict', str(phantom_png), '--run', str(poisoned), '--out', str(tmp_path / 'out'),
                   '--no-progress']) == 2
  assert 'non-finite weights' in capsys.readouterr().err and not (tmp_path / 'out').exists()
  assert jspark.main([str(phantom_png), '--run', str(poisoned), '--out', str(tmp_path / 'scores.parquet')]) == 2
  assert 'non-finite weights' in capsys.readouterr().err and not (tmp_path / 'scores.parquet').exists()


# 4. resume with a changed config ----------------------------------------------------------------

def test_resume_refuses_a_changed_config_and_keeps_the_record(phantom_png, tmp_path, capsys):
  """Catches `--resume` accepting another learning rate or image size and overwriting config.json."""
  assert experiment(phantom_png, tmp_path, '--run-name', 'r') == 0
  header = (tmp_path / 'exp20' / 'r' / 'config.json').read_text()
  assert experiment(phantom_png, tmp_path, '--run-name', 'r', '--resume', '--learning-rate', '0.5',
                    '--image-size', '64') == 2
  err = capsys.readouterr().err
  assert 'changed config' in err and 'learning_rate 0.01 -> 0.5' in err and 'image_size 32 -> 64' in err
  assert (tmp_path / 'exp20' / 'r' / 'config.json').read_text() == header
  assert experiment(phantom_png, tmp_path, '--run-name', 'never-started', '--resume') == 2
  assert 'no run to resume' in capsys.readouterr().err
  assert experiment(phantom_png, tmp_path, '--run-name', 'r', '--resume', '--epochs', '2') == 0
  assert json.loads((tmp_path / 'exp20' / 'r' / 'resumes.jsonl').read_text())['epochs'] == [1, 2]
  assert (tmp_path / 'exp20' / 'r' / 'config.json').read_text() == header


# 5. predict's output folder -------------------------------------------------------------------

def test_predict_never_clobbers_or_mixes_outputs(trained_runs, phantom_png, tmp_path, capsys):
  """Catches an --out inside the inputs, a non-empty --out overwritten and mixed with stale files,
  --overwrite deleting a folder predict did not write, and two same-named inputs sharing one overlay."""
  classifier = str(trained_runs[0])
  scans = tree_copy(phantom_png, tmp_path)
  patient = next(p for p in sorted(scans.iterdir()) if p.is_dir())
  predict = lambda *args: cli.main(['predict', *args, '--run', classifier, '--no-progress'])
  assert predict(str(scans), '--out', str(patient / 'predictions')) == 2
  assert 'inside or holds the inputs' in capsys.readouterr().err and not (patient / 'predictions').exists()
  mine = tmp_path / 'mine'
  mine.mkdir()
  (mine / 'notes.txt').write_text('keep me')
  assert predict(str(patient), '--out', str(mine)) == 2
  assert 'is not empty' in capsys.readouterr().err
  assert predict(str(patient), '--out', str(mine), '--overwrite') == 2
  assert 'was not written by jaxbrain predict' in capsys.readouterr().err
  assert (mine / 'notes.txt').read_text() == 'keep me'
  (tmp_path / 'a-file').write_text('x')
  assert predict(str(patient), '--out', str(tmp_path / 'a-file')) == 2
  assert 'is a file' in capsys.readouterr().err
  # the same slice file name in two folders: two overlays, two rows
  twin = tmp_path / 'twin'
  twin.mkdir()
  one = kaggle3m.scan(scans)[0].image_path
  shutil.copy(one, twin / one.name)
  out = tmp_path / 'out'
  assert predict(str(one), str(twin / one.name), '--out', str(out)) == 0
  assert len(list((out / 'overlays').iterdir())) == 2
  assert predict(str(patient), '--out', str(out), '--overwrite') == 0  # an earlier predict output is replaced
  assert len(list((out / 'overlays').iterdir())) == len(kaggle3m.scan(scans)) // len(list(scans.glob('TCGA*')))
  capsys.readouterr()
  assert jspark.main([str(patient), '--run', classifier, '--out', str(mine)]) == 2
  assert 'already exists' in capsys.readouterr().err and (mine / 'notes.txt').exists()


# 6. damaged runs --------------------------------------------------------------------------------

@pytest.mark.parametrize('damage, message', [
    (lambda run: (run / 'config.json').write_text((run / 'config.json').read_text()[:50]), 'not valid JSON'),
    (lambda run: (run / 'config.json').write_text(json.dumps(
        {**json.loads((run / 'config.json').read_text()), 'config': {
            **json.loads((run / 'config.json').read_text())['config'], 'colour': 'red'}})),
     'unknown settings colour'),
    (lambda run: [p.write_bytes(b'\0' * 10) for p in (run / 'checkpoints').rglob('*') if p.is_file()],
     'cannot be read'),
])
def test_damaged_runs_are_one_line_errors(trained_runs, phantom_png, tmp_path, capsys, damage, message):
  """Catches a 143-line orbax (or JSON, or TypeError) traceback for a damaged run folder."""
  run = Path(shutil.copytree(trained_runs[0], tmp_path / 'run'))
  damage(run)
  assert cli.main(['predict', str(phantom_png), '--run', str(run), '--out', str(tmp_path / 'out')]) == 2
  err = capsys.readouterr().err
  assert message in err and len(err.strip().splitlines()) == 1


# 7. impossible numbers ----------------------------------------------------------------------------

@pytest.mark.parametrize('flags, message', [
    (['--epochs', '0'], '--epochs must be at least 1; got 0'),
    (['--epochs', '-3'], '--epochs must be at least 1; got -3'),
    (['--batch-size', '0'], '--batch-size must be at least 1; got 0'),
    (['--image-size', '31'], '--image-size 31: the ResNet downsamples 32x'),
    (['--batch-size', '4096'], '--batch-size 4096 is larger than the'),
    (['--run-name', '../../outside'], "--run-name '../../outside': use letters, digits"),
    (['--learning-rate', '-1'], '--learning-rate must be positive'),
])
def test_impossible_numbers_are_refused(phantom_png, tmp_path, capsys, flags, message):
  """Catches "sizes must be positive" for a size of 31, zero training steps ending in a KeyError, and a
  run name that writes outside the workdir."""
  assert experiment(phantom_png, tmp_path, *flags) == 2
  errors = [line for line in capsys.readouterr().err.splitlines() if 'error' in line]
  assert len(errors) == 1 and message in errors[0]
  assert not (tmp_path / 'exp20').exists() or not list((tmp_path / 'exp20').glob('*/metrics.json'))
  assert not (tmp_path.parent / 'outside').exists()


def test_impossible_numbers_of_the_cli(trained_runs, phantom_png, tmp_path, capsys):
  """Catches "wrote -2 synthetic patients" and a predict batch of 0 reaching JAX."""
  assert cli.main(['phantom', str(tmp_path / 'ph'), '--patients', '-2']) == 2
  assert '--patients must be at least 1; got -2' in capsys.readouterr().err and not (tmp_path / 'ph').exists()
  assert cli.main(['predict', str(phantom_png), '--run', str(trained_runs[0]), '--out', str(tmp_path / 'o'),
                   '--batch-size', '0']) == 2
  assert '--batch-size must be at least 1' in capsys.readouterr().err


# 8. the file system -----------------------------------------------------------------------------

def test_a_workdir_that_is_a_file(phantom_png, tmp_path, capsys):
  """Catches a NotADirectoryError traceback for a --workdir that cannot hold folders."""
  (tmp_path / 'work').write_text('not a folder')
  assert experiment(phantom_png, tmp_path / 'work') == 2
  err = capsys.readouterr().err
  assert 'work' in err and len(err.strip().splitlines()) == 1


# 9. images ---------------------------------------------------------------------------------------

def huge_png(path: Path, size: int = 20000) -> None:
  """A valid 1x1 PNG whose header claims size x size pixels (what PIL reads before decoding)."""
  Image.new('L', (1, 1)).save(path)
  data = bytearray(path.read_bytes())
  header = struct.pack('>II', size, size) + bytes(data[24:29])
  data[16:29] = header
  data[29:33] = struct.pack('>I', zlib.crc32(b'IHDR' + header))
  path.write_bytes(bytes(data))


def test_huge_images_and_folders_named_like_slices(phantom_png, tmp_path, capsys):
  """Catches a DecompressionBombError traceback naming no file, and a folder named like a slice
  file crashing the scan."""
  tree = tree_copy(phantom_png, tmp_path)
  record = kaggle3m.scan(tree)[0]
  huge_png(record.image_path)
  assert cli.main(['data', str(tree)]) == 2
  err = capsys.readouterr().err
  assert f'{record.image_path}: refused as a decompression bomb' in err
  record.image_path.unlink()
  record.image_path.mkdir()  # a folder where the slice file was
  with pytest.warns(UserWarning, match='not a slice image'):
    with pytest.raises(kaggle3m.DataError, match='mask has no image'):
      kaggle3m.scan(tree)


# 10. concurrency ---------------------------------------------------------------------------------

def test_a_second_run_of_the_same_name_is_refused(phantom_png, tmp_path, capsys):
  """Catches two runs of one name writing one folder (today: a crash inside orbax)."""
  lock = tmp_path / '.locks' / 'exp20' / 'busy.lock'
  lock.parent.mkdir(parents=True)
  with open(lock, 'a') as held:
    fcntl.flock(held, fcntl.LOCK_EX)
    assert experiment(phantom_png, tmp_path, '--run-name', 'busy') == 2
  assert 'another process is running this run now' in capsys.readouterr().err


# 11. the catch-all -------------------------------------------------------------------------------

def test_unexpected_errors_leave_a_log_not_a_traceback(phantom_png, tmp_path, capsys, monkeypatch):
  """Catches a ValueError from inside JAX printed as if it were the user's mistake (exit 2, no
  traceback anywhere), and a raw traceback on the console."""
  from experiments import common

  def broken(*args, **kwargs):
    raise ValueError('an internal shape mismatch')

  monkeypatch.setattr(common, 'train_and_evaluate', broken)
  monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))  # the log's fallback folder: not the machine's /tmp
  assert experiment(phantom_png, tmp_path) == 1
  err = capsys.readouterr().err
  assert 'unexpected error: ValueError: an internal shape mismatch' in err and 'Traceback' not in err
  log = Path(err.split('the traceback is in ')[1].split(' (--debug')[0])
  assert 'Traceback' in log.read_text() and 'def broken' not in err
  assert experiment(phantom_png, tmp_path, '--debug') == 1
  assert 'Traceback' in capsys.readouterr().err


# 12. warnings where data is dropped or bent ------------------------------------------------------

def test_bent_data_is_named_in_warnings(tmp_path, capsys):
  """Catches a mistyped patient folder skipped without a word, soft mask values counted as tumor
  silently, and JPEG bytes in a .png passing as lossless."""
  tree = write_phantom(tmp_path / 'kaggle_3m', n_patients=2, slices_per_patient=(3, 3), seed=0, image_format='png')
  first, second = sorted(p for p in tree.iterdir() if p.is_dir())
  second.rename(tree / (second.name[:-1] + 'X'))  # a typo in the date
  records = kaggle3m.scan(tree)
  noisy = np.zeros((256, 256), np.uint8)
  noisy[10:20, 10:20] = 128
  Image.fromarray(noisy).save(records[0].mask_path)
  Image.open(records[1].image_path).convert('RGB').save(records[1].image_path, format='JPEG')
  with pytest.warns(UserWarning) as caught:
    assert cli.main(['data', str(tree)]) == 0
  said = ' | '.join(str(w.message) for w in caught)
  assert 'does not match TCGA_<inst>_<id>_<date>' in said and second.name[:-1] + 'X' in said
  assert '1 slice with mask values other than 0 and 255' in said
  assert '1 slice with .png file holding JPEG (lossy) data' in said


def test_only_jaxbrains_own_warnings_are_kept_for_the_page():
  """Catches a library's warning (JAX's compilation-cache note, say) repeated on the prediction page
  beside the warnings about the user's scans, and a kept warning no longer shown on the console."""
  import warnings
  from jaxbrain.errors import Caution, warnings_kept
  shown = []
  with warnings.catch_warnings():
    warnings.simplefilter('always')
    warnings.showwarning = lambda message, *_, **__: shown.append(str(message))
    with warnings_kept() as kept:
      warnings.warn('Error reading persistent compilation cache entry', UserWarning)
      warnings.warn('slices 5 are not among the inputs', Caution)
  assert kept == ['slices 5 are not among the inputs']
  assert shown == ['Error reading persistent compilation cache entry', 'slices 5 are not among the inputs']


def test_predict_warns_that_a_phantom_model_never_saw_a_real_scan(trained_runs, phantom_png, tmp_path, capsys):
  """Catches a model trained only on synthetic data labelling scans without a word of warning."""
  with pytest.warns(UserWarning, match='trained on synthetic phantom data only'):
    assert cli.main(['predict', str(phantom_png), '--run', str(trained_runs[0]), '--out', str(tmp_path / 'o'),
                     '--no-progress']) == 0


def test_a_nifti_volume_cut_short_is_a_one_line_error(trained_runs, tmp_path, capsys):
  """Catches a damaged `.nii.gz` (cut short: its header reads, its voxels do not) ending as an
  unexpected error (exit 1, "please report it") instead of one line naming the file (exit 2)."""
  from jaxbrain.data.phantom import write_nifti_phantom
  files, _ = write_nifti_phantom(tmp_path / 'case', n_slices=6, in_plane=64)
  files['flair'].write_bytes(files['flair'].read_bytes()[:2000])
  assert cli.main(['predict', '--t1', str(files['t1']), '--flair', str(files['flair']), '--t1ce', str(files['t1ce']),
                   '--run', str(trained_runs[0]), '--out', str(tmp_path / 'out'), '--no-progress']) == 2
  said = capsys.readouterr().err.strip().splitlines()
  assert len([line for line in said if 'error' in line]) == 1 and str(files['flair']) in said[-1]
  assert 'cut short' in said[-1] and not (tmp_path / 'out').exists()


def test_gate_and_ensemble_refuse_an_unfinished_run(trained_runs, member_runs, phantom_runs_data, tmp_path, capsys):
  """Catches `jaxbrain gate` or `jaxbrain ensemble` using a run that stopped before its test
  evaluation (no decision.json) with decisions guessed from defaults, instead of one line naming
  the run and saying how to finish it."""
  classifier, segmenter = trained_runs
  unfinished_segmenter = shutil.copytree(segmenter, tmp_path / 'seg')
  (unfinished_segmenter / 'decision.json').unlink()
  unfinished_member = shutil.copytree(member_runs['seg'][1], tmp_path / 'member1')
  (unfinished_member / 'decision.json').unlink()
  for command, run in ((['gate', '--run', str(classifier), '--seg-run', str(unfinished_segmenter)], unfinished_segmenter),
                       (['ensemble', str(member_runs['seg'][0]), str(unfinished_member), '--out', str(tmp_path / 'e')],
                        unfinished_member)):
    assert cli.main([*command, '--data-dir', str(phantom_runs_data)]) == 2
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and f'{run}: unfinished' in said[0] and 'finish it with: ' in said[0]
