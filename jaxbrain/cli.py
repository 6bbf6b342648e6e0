"""The `jaxbrain` command line: `jaxbrain data DIR`, `jaxbrain phantom OUT`, `jaxbrain predict INPUT...`,
`jaxbrain evaluate PRED_DIR --truth DIR`, `jaxbrain gate --run CLS --seg-run SEG --data-dir DIR`, `jaxbrain cache`,
`jaxbrain ensemble RUN... --out DIR --data-dir DIR`, `jaxbrain export RUN --out DIR`."""
from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import sys
from pathlib import Path

from jaxbrain import __version__, compilation_cache, configure_cpu
from jaxbrain.allocator import restart_with_tcmalloc
from jaxbrain.errors import ConfigError, run_entry_point
from jaxbrain.flags import Parser, add_debug_flag, add_inference_flags, at_least
from jaxbrain.text import counted

# The commands import what they run when they run: `jaxbrain --help` and a mistyped flag need no JAX.


def _data(args) -> int:
  from jaxbrain.data import kaggle3m

  summary = kaggle3m.summarize(args.dir, progress=not args.json)
  if args.json:
    print(json.dumps(summary))
    return 0
  print(f'{summary["root"]}: {counted(summary["patients"], "patient")}, {counted(summary["slices"], "slice")}, '
        f'{summary["tumor_slices"]} with tumor ({", ".join(summary["formats"])})')
  for code, counts in summary['institutions'].items():
    print(f'  institution {code}: {counted(counts["patients"], "patient")}, {counted(counts["slices"], "slice")}, '
          f'{counts["tumor_slices"]} with tumor')
  for channels, count in summary['channels'].items():
    print(f'  {counted(count, "patient")} with {channels}')
  return 0


def _phantom(args) -> int:
  from jaxbrain.data.phantom import write_phantom

  root = write_phantom(args.out, n_patients=args.patients, seed=args.seed, image_format=args.format)
  print(f'wrote {args.patients} synthetic patients to {root}')
  return 0


def _predict(args) -> int:
  from jaxbrain.localize.predict import predict

  given = {m: getattr(args, m) for m in ('t1', 'flair', 't1ce') if getattr(args, m)}
  if given and len(given) < 3:
    missing = ', '.join(f'--{m}' for m in ('t1', 'flair', 't1ce') if m not in given)
    raise ConfigError(f'a case given by its volumes needs --t1, --flair and --t1ce; missing {missing}')
  if args.case and not given:
    raise ConfigError('--case names a case given by --t1 --flair --t1ce; a case folder is named after its files or folder')
  if not args.inputs and not given:
    raise ConfigError('nothing to score: give slice images, patient folders, NIfTI case folders or DICOM study '
                      'folders, or --t1 --flair --t1ce')
  from jaxbrain.bundle import runs_to_score

  run, seg_run = runs_to_score(args.run, args.seg_run, args.model)
  if args.type_model and seg_run is None:
    raise ConfigError('--type-model reads the shape of each patient\'s predicted masks: give a segmenter (--seg-run or '
                      '--model)')
  summary = predict(args.inputs, run, args.out, seg_run_dir=seg_run, batch_size=args.batch_size,
                    progress=not args.no_progress, overwrite=args.overwrite, case_files=given or None,
                    case_name=args.case, type_model=args.type_model)
  slices = sum(p['slices'] for p in summary.values())
  tumor = sum(len(p['slices_with_tumor']) for p in summary.values())
  volumes = [f'{name} {entry["tumor_volume_ml"]:.2f} ml' for name, entry in summary.items() if 'tumor_volume_ml' in entry]
  print(f'{counted(slices, "slice")} of {counted(len(summary), "patient")}: {tumor} predicted with tumor'
        + (f'; tumor volume {", ".join(volumes)}' if volumes else '')
        + f'; wrote {Path(args.out) / "report.html"} (open it in a browser), predictions.csv, summary.json, overlays/'
        + (', masks/' if seg_run else '') + (', <case>_mask.nii.gz' if volumes else '')
        + (', <case>_seg.dcm (DICOM SEG)' if any('dicom_seg' in entry for entry in summary.values()) else ''))
  return 0


def _evaluate(args) -> int:
  from jaxbrain.files import jsonable
  from jaxbrain.localize.evaluate import evaluate, format_table

  result = evaluate(args.pred_dir, args.truth, args.bootstrap_samples)
  print(format_table(result))
  print(json.dumps(jsonable(result)))
  return 0


def _gate(args) -> int:
  from jaxbrain.files import jsonable
  from jaxbrain.localize.gate import choose_and_measure, choose_own_detector, format_own_table, format_table

  if args.run is None:
    result = choose_own_detector(args.seg_run, args.data_dir, args.batch_size, args.bootstrap_samples)
    print(format_own_table(result))
    print(f'stored in {result["written_to"]}: `jaxbrain predict --seg-run {args.seg_run}` and `jaxbrain export` apply it')
    print(json.dumps(jsonable({k: result[k] for k in ('detector', 'test_patients', 'test')})))
    return 0
  result = choose_and_measure(args.run, args.seg_run, args.data_dir, args.batch_size, args.bootstrap_samples)
  print(format_table(result))
  print(f'stored in {result["written_to"]}: `jaxbrain predict --run {args.run} --seg-run {args.seg_run}` applies it')
  print(json.dumps(jsonable({k: result[k] for k in ('gate', 'test_patients', 'test')})))
  return 0


def _ensemble(args) -> int:
  from jaxbrain.files import jsonable
  from jaxbrain.localize.ensemble import format_table, make_ensemble

  figures = make_ensemble(args.runs, args.out, args.data_dir, args.batch_size)
  print(format_table(figures))
  print(json.dumps(jsonable({'out': args.out, **figures})))
  return 0


def _export(args) -> int:
  from jaxbrain.localize.export import export

  record = export(args.run, args.out, args.name or Path(args.run).resolve().name, args.model_version,
                  'float16' if args.float16 else 'float32', args.recipe)
  print(f'wrote the bundle {record["name"]} {record["version"]} to {record["out"]} ({len(record["members"])} '
        f'member(s), sha256 {record["sha256"][:16]}): `jaxbrain predict INPUTS --model {record["out"]} --out DIR` '
        'uses it; MODEL_CARD.md says what it is for')
  return 0


def _cache(args) -> int:
  folder = compilation_cache.cache_dir()
  if folder is None:
    print('the compilation cache is off (JAXBRAIN_CACHE=off)')
    return 0
  if args.clear:
    print(f'{folder}: emptied, {compilation_cache.clear(folder) / 1e6:.1f} MB freed')
  else:
    print(f'{folder}: {compilation_cache.size(folder) / 1e6:.1f} MB of compiled programs (at most '
          f'{compilation_cache.MAX_BYTES / 1e9:.0f} GB); training runs cache in <workdir>/xla-cache')
  return 0


# The commands on trained runs, each described by its module's docstring: (module, the function that
# runs it, its one-line help, an example, its `InferenceConfig` flags, its own arguments).
DOCUMENTED_COMMANDS = (
    ('jaxbrain.localize.evaluate', _evaluate, 'score a `jaxbrain predict` output against the true masks and labels',
     'example: jaxbrain evaluate predictions/ --truth ../shared/data/lgg/kaggle_3m; the five folds pooled: '
     'jaxbrain evaluate pred/fold0 pred/fold1 pred/fold2 pred/fold3 pred/fold4 --truth ...',
     {'bootstrap_samples': True},
     ((('pred_dir',), {'nargs': '+', 'help': 'folders written by `jaxbrain predict`'}),
      (('--truth',), {'required': True, 'help': 'the kaggle_3m folder holding the true masks of those slices'}))),
    ('jaxbrain.localize.gate', _gate, 'detect, then localize: choose on validation the pair\'s detector and its gate',
     'example: jaxbrain gate --run checkpoints/exp21/RUN --seg-run checkpoints/seg01/RUN '
     '--data-dir ../shared/data/lgg/kaggle_3m',
     {'batch_size': True, 'bootstrap_samples': True},
     ((('--run',), {'help': 'run directory of a classification experiment; without it, the segmenter\'s own '
                            'detector is chosen among those that need no classifier'}),
      (('--seg-run',), {'required': True, 'help': 'run directory of a segmentation experiment (same split)'}),
      (('--data-dir',), {'required': True, 'help': 'the kaggle_3m folder the runs were trained on'}))),
    ('jaxbrain.localize.ensemble', _ensemble, 'put member runs together; choose its decisions on the decision set',
     'example: jaxbrain ensemble checkpoints/seg01/patient-member*-scratch-160px-seed0 --out ensembles/seg01 '
     '--data-dir ../shared/data/lgg/kaggle_3m',
     {'batch_size': True},
     ((('runs',), {'nargs': '+', 'help': 'the member runs (--member K runs of one experiment)'}),
      (('--out',), {'required': True, 'help': 'the ensemble\'s folder: new or empty'}),
      (('--data-dir',), {'required': True, 'help': 'the kaggle_3m folder holding the decision set (the seed\'s '
                                                   'validation patients); its test patients are not read'}))),
    ('jaxbrain.localize.export', _export, 'write a model bundle of a run or an ensemble for predict --model',
     'example: jaxbrain export ensembles/seg01 --out checkpoints/models/lgg-seg01 --name lgg-seg01', {},
     ((('run',), {'help': 'a finished run or ensemble folder (its own detector goes with it: jaxbrain gate '
                          '--seg-run RUN alone chooses one)'}),
      (('--out',), {'required': True, 'help': 'the bundle\'s folder: new or empty'}),
      (('--name',), {'help': 'the model\'s name (default: the run folder\'s name)'}),
      (('--model-version',), {'default': '1.0', 'help': 'the model\'s version (default: 1.0)'}),
      (('--float16',), {'action': 'store_true', 'help': 'store the weights as float16 (half the size; read back as '
                        'float32): only where the decision set gives the same labels and masks'}),
      (('--recipe',), {'metavar': 'COMMAND', 'help': 'the command that trained the members, stated in model.json '
                       'and the model card where their runs did not record it'}))),
)


def build_parser() -> argparse.ArgumentParser:
  parser = Parser(prog='jaxbrain', description=__doc__)
  parser.add_argument('--version', action='version', version=f'jaxbrain {__version__}')
  add_debug_flag(parser)
  commands = parser.add_subparsers(dest='command', required=True)
  data = commands.add_parser('data', help='validate a kaggle_3m tree and summarize it')
  data.add_argument('dir', help='the kaggle_3m folder (patient folders TCGA_<inst>_<id>_<date>/)')
  data.add_argument('--json', action='store_true', help='print one JSON object instead of text')
  data.set_defaults(run_command=_data)
  phantom = commands.add_parser('phantom', help='write a synthetic dataset in the kaggle_3m layout')
  phantom.add_argument('out', help='folder to create')
  phantom.add_argument('--patients', type=at_least(1), default=10, help='synthetic patients to write (default: 10)')
  phantom.add_argument('--seed', type=int, default=0, help='the same seed writes the same data (default: 0)')
  phantom.add_argument('--format', choices=('tif', 'png'), default='tif', help='image files (default: tif, as Kaggle)')
  phantom.set_defaults(run_command=_phantom)
  _add_predict(commands)
  for module, run_command, help, epilog, inference_flags, arguments in DOCUMENTED_COMMANDS:
    command = _documented_command(commands, module, run_command, help, epilog, **inference_flags)
    for names, settings in arguments:
      command.add_argument(*names, **settings)
  cache = commands.add_parser('cache', help='show or empty the compiled-program cache of the commands',
                              description=compilation_cache.__doc__.strip().replace('%', '%%'),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  cache.add_argument('--clear', action='store_true', help='empty it (programs compile again on their next run)')
  cache.set_defaults(run_command=_cache)
  return parser


def _documented_command(commands, module: str, run_command, help: str, epilog: str,
                        **inference_flags) -> argparse.ArgumentParser:
  """The subcommand `module` implements (named as its module, run by `run_command`, taking the
  `InferenceConfig` flags named), described by the module's docstring: what a command does is
  stated once, there. The docstring is read from the source, not imported."""
  command = commands.add_parser(module.rsplit('.', 1)[-1], help=help, epilog=epilog,
                                description=_docstring(module).strip().replace('%', '%%'),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
  command.set_defaults(run_command=run_command)
  add_inference_flags(command, **inference_flags)
  return command


def _docstring(module: str) -> str:
  """A module's docstring, read from its file without running it (and what it imports)."""
  return ast.get_docstring(ast.parse(Path(importlib.util.find_spec(module).origin).read_text(encoding='utf-8'))) or ''


def _add_predict(commands) -> None:
  """`jaxbrain predict`'s flags."""
  predict = commands.add_parser(
      'predict', help='score slices with a model bundle or trained runs; write report.html, masks and overlays',
      epilog='examples:\n  jaxbrain predict kaggle_3m/TCGA_CS_4941_19960909 --out pred/   (the shipped model)\n'
             '  jaxbrain predict kaggle_3m/TCGA_CS_4941_19960909 --run checkpoints/exp21/RUN --out pred/\n'
             '  jaxbrain predict BraTS2021_00495/ --run checkpoints/exp21/RUN --seg-run checkpoints/seg01/RUN --out pred/\n'
             '  jaxbrain predict study/ --seg-run checkpoints/seg01/RUN --out pred/   (DICOM series: FLAIR, T1, T1 post)',
      formatter_class=argparse.RawDescriptionHelpFormatter)
  predict.add_argument('inputs', nargs='*', help='.tif/.png slices, kaggle_3m patient folders or trees, NIfTI '
                       'case folders (BraTS names: *_t1, *_flair, *_t1ce, *-t1n, *-t2f, *-t1c, or bare t1n, t2f, '
                       't1c .nii[.gz]) and DICOM study folders (series matched by their Series Description: FLAIR; T1 with post, +c, gd, ce '
                       'or contrast; other T1)')
  for modality, meaning in (('t1', 'pre-contrast T1'), ('flair', 'FLAIR'), ('t1ce', 'post-contrast T1')):
    predict.add_argument(f'--{modality}', metavar='PATH', help=f'the {meaning} of one case: a NIfTI file or a DICOM '
                         'series folder (all three of --t1 --flair --t1ce, of one kind)')
  predict.add_argument('--case', help='name of the case given by --t1 --flair --t1ce (default: from the FLAIR file, '
                       'or the folder holding the FLAIR series folder)')
  predict.add_argument('--run', help='run directory of a classification experiment (exp01-exp22): the slice\'s '
                       'tumor probability and label')
  predict.add_argument('--seg-run', help='run directory of a segmentation experiment (seg01-seg03): tumor masks, '
                       'post-processed as the run chose on validation; with --run, gated by the classifier (the gate '
                       '`jaxbrain gate` chose, else its threshold); alone, also the probability (the slice\'s largest '
                       'pixel probability) and the label (the mask is not empty)')
  predict.add_argument('--model', metavar='DIR', help='a model bundle (jaxbrain export); with none of --model, --run '
                       'and --seg-run, the bundle this checkout ships (checkpoints/models/lgg-seg01)')
  predict.add_argument('--type-model', metavar='FILE', help='a type model (type_model.json of python -m '
                       'experiments.radiogenomics): each patient\'s probabilities of grade, histological type and '
                       'genomic subtype from the shape (and intensity) of its predicted masks, in summary.json '
                       '(research use only)')
  predict.add_argument('--out', required=True, help='output folder: new or empty, outside the inputs')
  predict.add_argument('--overwrite', action='store_true',
                       help='replace --out if it holds an earlier `jaxbrain predict` output (never another folder)')
  add_inference_flags(predict, batch_size=True)
  predict.add_argument('--no-progress', action='store_true', help='no progress bars')
  predict.set_defaults(run_command=_predict)


COMPILING = ('predict', 'evaluate', 'gate', 'ensemble', 'export')  # the commands that run models: they use the cache


def main(argv: list[str] | None = None) -> int:
  """Runs one command: 0 on success, 2 (one line) for a user's mistake, 1 (one line and a log of
  the traceback) for anything unexpected."""
  if argv is None:  # the `jaxbrain` command itself: run it with tcmalloc (jaxbrain/allocator.py)
    restart_with_tcmalloc()
  try:
    args = build_parser().parse_args(argv)
  except SystemExit as e:  # --help, --version (0) or a mistyped or impossible flag (2, said in one line)
    return e.code
  configure_cpu()
  if args.command in COMPILING:
    compilation_cache.enable()
  return run_entry_point(f'jaxbrain {args.command}', lambda: args.run_command(args), args.debug,
                         log_folder=lambda: getattr(args, 'out', None) if args.command == 'predict' else None)


if __name__ == '__main__':
  sys.exit(main())
