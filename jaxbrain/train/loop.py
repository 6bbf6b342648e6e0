"""The one runner, for classification and segmentation: `train_and_evaluate(config)`.

files -> validated examples -> train / validation / test split -> the run folder checked, locked
and (on --resume) read back (`guard.py`) -> the task (`tasks.py`) -> its arrays placed on the
devices once (or fed from the host when they do not fit) -> the epochs (`fit.py`) -> the selected
checkpoint evaluated once on test, the decisions, the evaluators and the files (`finish.py`), all
in the run folder (`folders.RunDir`). The runner calls the task only through the `Task` protocol.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import signal
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import jax
import numpy as np

from jaxbrain import machine
from jaxbrain.config import Config
from jaxbrain.data import (SliceArrays, check_batch_size, check_disjoint, fingerprint, make_split, patient_split,
                           split_record, write_phantom)
from jaxbrain.data.batching import eval_index_batches
from jaxbrain.data.clinical import read_clinical
from jaxbrain.errors import UserError
from jaxbrain.files import write_json
from jaxbrain.folders import RunDir, WorkDir
from jaxbrain.runs import resume_command
from jaxbrain.train import sharding
from jaxbrain.train.checkpoints import Checkpoints
from jaxbrain.train.finish import check_evaluators, evaluate_selected, print_summary, select, write_results
from jaxbrain.train.fit import FitJob, Interrupted, fit
from jaxbrain.train.guard import check_resume, check_run_dir, prepare_run_dir, record_extension, run_lock
from jaxbrain.train.outputs import RunWriter
from jaxbrain.train.progress import Progress
from jaxbrain.train.state import create_train_state
from jaxbrain.train.steps import with_weight_average
from jaxbrain.train.tasks import build_task
from jaxbrain.tumour_type import target, type_slices


def _process0_first(fn):
  """Runs `fn` on process 0 first (it may write shared files), then on the others."""
  if jax.process_count() == 1:
    return fn()
  from jax.experimental import multihost_utils
  result = fn() if jax.process_index() == 0 else None
  multihost_utils.sync_global_devices('jaxbrain: process 0 prepared the data')
  return result if jax.process_index() == 0 else fn()


def prepare_data(config: Config, progress: bool = True) -> tuple[SliceArrays, str, str]:
  """(data, description, content fingerprint) of `config.data.data_dir`, or of the embedded phantom
  dataset (generated once) when it is None; `progress` shows the dataset build's bars."""
  return _process0_first(lambda: _load(config, progress))


def _load(config: Config, progress: bool) -> tuple[SliceArrays, str, str]:
  from jaxbrain.data import builder  # tensorflow_datasets only for runs that load data (jaxbrain.data)
  workdir, patients = WorkDir(config.workdir), config.data.phantom_patients
  if config.data.data_dir:
    root = Path(config.data.data_dir)
    source = f'kaggle_3m at {root.resolve()}'
  else:
    root = workdir.phantom(patients)
    write_phantom(root, n_patients=patients, seed=0, exist_ok=True, image_format='png')  # lossless, a sixth of tif
    source = f'phantom (synthetic, {patients} patients) at {root.resolve()}'
  content = fingerprint(root)
  data = builder.load_dataset(root, builder.default_data_dir(root, workdir.tfds, content), progress)
  if config.data.type_target is not None:
    data = type_slices(data, read_clinical(root), config.data.type_target)
    source += f'; tumour slices labelled {target(config.data.type_target).name} (data.csv)'
  return data, source, content


def _counts(data: SliceArrays, split, devices: int) -> dict:
  counts = {'devices': devices}
  for side, part in split.sides().items():
    counts.update({f'{side}_slices': len(part), f'{side}_patients': len(set(data.patient[part])),
                   f'{side}_tumor_slices': int(data.label[part].sum())})
  return counts


def train_and_evaluate(config: Config, resume: bool = False, overwrite: bool = False,
                       progress: bool = True, command: str | None = None) -> dict:
  """Trains `config` (classification or segmentation), picks the checkpoint on validation, evaluates
  it once on test, and returns the final metrics (also written to metrics.json; top-level keys
  are test's). `resume` continues the run of the same name with the same config (or more epochs).
  `command`, the command line that started the run, is recorded in config.json: a stop at any point
  (Ctrl-C or SIGTERM, in training, validation, test or while writing files) raises `Interrupted`
  naming the command that finishes the run."""
  with run_lock(config.run_dir, take=jax.process_index() == 0), _stops_named(config.run_dir):
    return _train_and_evaluate(config, config.run_dir, resume, overwrite, progress, command)


@contextlib.contextmanager
def _stops_named(run: RunDir) -> Iterator[None]:
  """SIGTERM interrupts like Ctrl-C (the fit loop checkpoints first on both), and any interruption
  becomes an `Interrupted` that says how to go on."""
  terminate = None
  if threading.current_thread() is threading.main_thread():
    terminate = signal.signal(signal.SIGTERM, signal.default_int_handler)
  try:
    yield
  except KeyboardInterrupt as e:
    stopped = str(e) if isinstance(e, Interrupted) else 'stopped'
    how = (f'finish it with: {resume_command(run)}' if run.config.is_file()
           else 'the run had not started: run the same command again')
    raise Interrupted(f'{stopped}; {run} is unfinished, {how}') from None
  finally:
    if terminate is not None:
      signal.signal(signal.SIGTERM, terminate)


def _train_and_evaluate(config: Config, run: RunDir, resume: bool, overwrite: bool, progress: bool,
                        command: str | None) -> dict:
  began = time.perf_counter()
  writes = jax.process_index() == 0  # process 0 writes the run folder; the others compute alongside
  check_evaluators(config.task.evals)
  data, source, content = prepare_data(config, progress)
  timing = {'seconds_to_data': time.perf_counter() - began, 'seconds_to_first_step': None}
  split = make_split(config.data.split, data.patient, data.label, fold=config.data.fold, member=config.data.member,
                     seed=config.seed)
  if config.data.split == 'patient':
    check_disjoint(split, data.patient)
  extension = None
  if writes:
    check_run_dir(run, resume, overwrite)
    extension = check_resume(run, config, content) if resume else None
  task = build_task(config, data, split, progress=progress and writes)
  if writes:
    prepare_run_dir(run, resume)
  mesh = sharding.make_mesh()
  check_batch_size(config.batch_size, mesh.size)
  averaged = config.optimizer.ema_decay > 0
  state = sharding.replicate(create_train_state(task.variables, task.tx, config.seed, averaged), mesh)
  steps = CompiledSteps.of(config, task, mesh)
  checkpoints = Checkpoints(run, config.keep_checkpoints)
  state, at = _resumed(checkpoints, state, run, config) if resume else (state, Progress())
  counts = _counts(data, split, mesh.size)
  writer = None
  if writes:
    if extension:
      record_extension(run, extension)
    if not resume:
      _write_run_facts(run, config, task, data, split, source, content, counts, command)
    writer = RunWriter(run)
    _print_start(config, task, source, counts, mesh.size, steps.eval.resident, run)

  job = FitJob(task, config, split, mesh, steps.train, steps.dispatch_outputs, checkpoints, run, writer, timing, began,
               progress and writes)
  state, at = fit(job, state, at)
  selected, selection = select(checkpoints, state, at, task.selection, config.epochs)
  validation, test, test_outputs, decision = evaluate_selected(task, config, split, selected, steps.outputs_of,
                                                               steps.decisions, run if writes else None)
  final = {**test, 'validation': validation, 'test': test, 'selected_checkpoint': selection,
           'task': config.task.name, 'split': config.data.split, 'fold': config.data.fold, 'member': config.data.member,
           'init': task.init_description, 'data': source, 'data_fingerprint': content, 'counts': counts,
           'epochs': config.epochs, 'experiment': config.experiment, 'model': config.describe(), **task.summary,
           'preprocess': config.data.preprocess, 'image_size': config.data.image_size,
           'data_on_devices': steps.eval.resident, 'steps_per_dispatch': max(steps.train),
           'timing': {**timing, 'seconds': time.perf_counter() - began}}
  checkpoints.close()
  if writes:
    write_results(run, task, config, final, decision, test_outputs, split, writer)
    writer.close()
    print_summary(final, run, task, config, time.perf_counter() - began, resumed=resume)
  return final


@dataclasses.dataclass(frozen=True)
class CompiledSteps:
  """A run's jitted steps fed on the mesh: `train[k]` runs k training steps per dispatch, `eval`
  the evaluation step, `decisions` the task's decision steps; every step shares the device copies
  of the data."""
  config: Config
  task: object
  train: dict
  eval: object
  decisions: dict

  @classmethod
  def of(cls, config: Config, task, mesh) -> CompiledSteps:
    averaged = config.optimizer.ema_decay > 0
    train_step = with_weight_average(task.train_step, config.optimizer.ema_decay) if averaged else task.train_step
    placed = {}  # device copies shared by the steps
    per_dispatch = config.steps_per_dispatch or (1 if jax.default_backend() == 'cpu' else 8)
    replicated = (sharding.replicated(mesh),) * 2
    train = {count: sharding.feed(train_step, mesh, task.arrays('train'), replicated, donate_state=True, placed=placed,
                                  steps=count) for count in sorted({1, per_dispatch})}
    fed_eval = lambda step: sharding.feed(step, mesh, task.arrays('eval'), sharding.data_sharding(mesh),  # noqa: E731
                                         placed=placed)
    return cls(config, task, train, fed_eval(task.eval_step),
               {name: fed_eval(step) for name, step in task.decision_steps.items()})

  def dispatch_outputs(self, state, indices: np.ndarray, step=None) -> Callable[[], dict[str, np.ndarray]]:
    """Queues `step` (default: the eval step) over `indices` (inputs placed ahead on a thread);
    returns the function that reads the outputs, in the indices' order, once."""
    step = step or self.eval
    batches = list(eval_index_batches(indices, self.config.batch_size))
    placed_rows = sharding.prefetched(functools.partial(step.put, self.task.rows('eval', idx)) for idx, _ in batches)
    running = [step.run(state, rows) for rows in placed_rows]

    def read() -> dict[str, np.ndarray]:
      outputs = sharding.to_host(running)
      return {k: np.concatenate([o[k][valid] for o, (_, valid) in zip(outputs, batches)]) for k in outputs[0]}
    return read

  def outputs_of(self, state, indices: np.ndarray, step=None) -> dict[str, np.ndarray]:
    """`step`'s (default: the eval step's) outputs for `indices`, in their order."""
    return self.dispatch_outputs(state, indices, step)()


def _resumed(checkpoints: Checkpoints, state, run: RunDir, config: Config):
  """(state, progress) of the run's newest checkpoint, or the fresh ones when it has none; a
  checkpoint that cannot be read stops with what to do."""
  if checkpoints.latest_step() is None:
    return state, Progress()
  try:
    state, record = checkpoints.restore(state)
  except Exception as e:  # noqa: BLE001 -- orbax raises many kinds on damaged files
    raise UserError(f'{run.checkpoints("last")}: the newest checkpoint cannot be read ({type(e).__name__}: '
                    f'{str(e).splitlines()[0][:160] if str(e) else "damaged"}); delete that step folder to resume '
                    'from the one before, or start a new run') from e
  at = Progress.from_json(record)
  where = (f'at epoch {at.epoch + 1}, batch {at.batch}' if at.epoch < config.epochs
           else f'after its last epoch ({config.epochs}): its test evaluation and files follow')
  print(f'resumed {run} {where}')
  return state, at


def _write_run_facts(run: RunDir, config: Config, task, data: SliceArrays, split, source: str, content: str,
                     counts: dict, command: str | None) -> None:
  """A new run's config.json (with what it was trained on, where, and the command that started
  it) and split.json."""
  write_json(run.config, {**config.to_json(), 'init': task.init_description, 'data': source,
                          'data_fingerprint': content, 'counts': counts, 'machine': machine.describe(), **task.facts,
                          **({'command': command, 'cwd': os.getcwd()} if command else {})})
  seed_test = None if config.data.member is None else patient_split(data.patient, data.label, seed=config.seed).test
  write_json(run.split, split_record(split, config.data.split, config.seed, config.data.fold, content,
                                     data.patient, data.slice, config.data.member, seed_test))


def _print_start(config: Config, task, source: str, counts: dict, devices: int, resident: bool, run: RunDir) -> None:
  leak = ' (slices of one patient on several sides: patients leak, numbers are optimistic)' * (
      config.data.split == 'slice')
  print(f'{config.experiment}: {config.describe()}; init {task.init_description}; data {source}; '
        f'{config.data.split} split{leak}: '
        f'{counts["train_slices"]} train / {counts["validation_slices"]} validation / {counts["test_slices"]} test '
        f'slices ({counts["train_patients"]} / {counts["validation_patients"]} / {counts["test_patients"]} '
        f'patients); {devices} device(s), data {"on the devices" if resident else "fed from the host"}; '
        f'run dir {run}', flush=True)
