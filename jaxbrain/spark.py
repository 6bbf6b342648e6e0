"""Batch scoring of scan archives on Apache Spark: one Parquet row per slice.

  python -m jaxbrain.spark INPUT... [--model DIR | --run RUN_DIR --seg-run RUN_DIR] --out scores.parquet [--master local[2]]

INPUT: files, folders (searched recursively) or any Hadoop-compatible URI Spark reads (`s3a://`,
`hdfs://`, `gs://`), or `--list FILE` with one such path per line. Files are read by Spark's
`binaryFile` source, grouped by patient (a segmenter's post-processing reads a patient's whole
stack) and scored per patient with `applyInPandas`; each Python worker loads the runs once
(`jaxbrain.inference.Scorer`) and keeps them for its later patients; with neither a model bundle
(`--model`) nor runs, the bundle a checkout ships scores, as in `jaxbrain predict`. An unreadable
file gives a row with its `error` and no scores: one bad file never fails the job. The run
directories must be readable by the executors: a shared filesystem path, or shipped with the
job (`spark-submit --archives runs.zip#runs ... --run runs/exp20/<run>`).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from jaxbrain import configure_cpu
from jaxbrain.errors import OutputExistsError, run_entry_point
from jaxbrain.flags import INFERENCE, Parser, add_debug_flag, add_inference_flags

SCHEMA = ('path string, patient string, slice int, probability double, label int, tumor_pixels long, '
          'disagreement double, error string')  # disagreement: an ensemble's members' spread (predict's column)
IMAGE_GLOB = '*.{tif,tiff,png,TIF,TIFF,PNG}'
_SCORERS: dict = {}  # per Python worker: (run, seg_run) -> Scorer, so a model loads once per worker


def _local_path(uri: str) -> str:
  return uri[len('file:'):] if uri.startswith('file:') else uri


def score_patient(frame, run_dir: str, seg_run_dir: str | None, batch_size: int):
  """applyInPandas body: one patient's (path, content) rows -> its rows in SCHEMA, slices in order."""
  import pandas as pd

  from jaxbrain.compilation_cache import enable
  from jaxbrain.data.kaggle3m import DataError, read_image
  from jaxbrain.data.kaggle3m import slice_identity
  from jaxbrain.inference import Scorer

  key = (run_dir, seg_run_dir)
  if key not in _SCORERS:
    configure_cpu()  # this Python worker's first JAX use: XLA reads the flags now
    enable()  # the worker's compiled programs, from the cache the earlier workers and commands filled
    _SCORERS[key] = Scorer(run_dir, seg_run_dir, batch_size)
  scorer = _SCORERS[key]
  rows, images, good = [], [], []
  files = [(slice_identity(Path(_local_path(uri))), _local_path(uri), uri, content)
           for uri, content in zip(frame['path'], frame['content'])]
  files.sort(key=lambda f: (f[0][1] or 0, f[1]))  # the patient's slices in order: its stack
  for (patient, number), path, uri, content in files:
    row = {'path': uri, 'patient': patient, 'slice': number, 'probability': None, 'label': None,
           'tumor_pixels': None, 'disagreement': None, 'error': None}
    try:
      images.append(read_image(path, bytes(content)))
      good.append(len(rows))
    except DataError as e:
      row['error'] = str(e)
    rows.append(row)
  if images:
    scores = scorer.score(np.stack(images), [rows[i]['patient'] for i in good])
    for j, i in enumerate(good):
      if not np.isfinite(scores.probability[j]):  # damaged weights: no label rather than a wrong one
        rows[i]['error'] = f'non-finite tumor probability from {run_dir or seg_run_dir}: its weights are damaged or diverged'
        continue
      rows[i].update(probability=float(scores.probability[j]), label=int(scores.label[j]),
                     tumor_pixels=int(scores.mask[j].sum()) if scores.mask is not None else None,
                     disagreement=float(scores.spread[j]) if scores.spread is not None else None)
  return pd.DataFrame(rows, columns=[c.split()[0] for c in SCHEMA.split(', ')]).astype(
      {'slice': 'Int32', 'label': 'Int32', 'tumor_pixels': 'Int64'})


def _patient_of(uri: str) -> str:
  from jaxbrain.data.kaggle3m import slice_identity

  return slice_identity(Path(_local_path(uri)))[0]


def score(spark, inputs: list[str], run_dir: str | None, out: str, seg_run_dir: str | None = None, batch_size: int | None = None,
          overwrite: bool = False):
  """Scores every slice image under `inputs` (not `_mask` files) and writes a Parquet table to `out`
  (an existing `out` only with `overwrite`)."""
  from pyspark.sql import functions as F

  files = (spark.read.format('binaryFile').option('recursiveFileLookup', 'true').option('pathGlobFilter', IMAGE_GLOB)
           .load(inputs).select('path', 'content')
           .where(~F.regexp_extract('path', r'([^/]*)$', 1).rlike(r'_mask\.[A-Za-z]+$')))

  batch_size = batch_size or INFERENCE.batch_size
  run_dir, seg = (str(Path(d).resolve()) if d and '://' not in d else d for d in (run_dir, seg_run_dir))
  patient = F.udf(_patient_of, 'string', useArrow=False)  # a plain Python UDF: Spark then infers nothing from hints
  scored = (files.withColumn('patient', patient('path')).groupBy('patient')
            .applyInPandas(lambda frame: score_patient(frame, run_dir, seg, batch_size), schema=SCHEMA))
  scored.write.mode('overwrite' if overwrite else 'errorifexists').parquet(out)
  return spark.read.parquet(out)


def main(argv: list[str] | None = None) -> int:
  parser = Parser(prog='python -m jaxbrain.spark', description=__doc__.splitlines()[0])
  parser.add_argument('inputs', nargs='*', help='files, folders or URIs of slice images')
  parser.add_argument('--list', help='a text file with one input path or URI per line')
  parser.add_argument('--run', help='classification run directory')
  parser.add_argument('--seg-run', help='segmentation run directory (adds tumor_pixels)')
  parser.add_argument('--model', metavar='DIR', help='a model bundle (jaxbrain export); with none of --model, --run '
                      'and --seg-run, the bundle this checkout ships')
  parser.add_argument('--out', required=True, help='Parquet output path or URI (must not exist, unless --overwrite)')
  parser.add_argument('--overwrite', action='store_true', help='replace an existing --out')
  parser.add_argument('--master', help='Spark master, e.g. local[2]; default: what spark-submit gives')
  add_inference_flags(parser, batch_size=True)
  add_debug_flag(parser)
  args = parser.parse_args(argv)
  inputs = list(args.inputs)
  if args.list:
    inputs += [line.strip() for line in Path(args.list).read_text().splitlines() if line.strip()]
  if not inputs:
    parser.error('give INPUT paths or --list FILE')
  inputs = [str(Path(p).resolve()) if '://' not in p else p for p in inputs]
  configure_cpu()
  return run_entry_point('python -m jaxbrain.spark', lambda: _run(args, inputs), args.debug)


def _run(args, inputs: list[str]) -> int:
  from jaxbrain.bundle import runs_to_score
  from jaxbrain.inference import Scorer

  if '://' not in args.out and Path(args.out).exists() and not args.overwrite:
    raise OutputExistsError(f'{args.out}: already exists; choose a new --out, or pass --overwrite to replace it')
  run, seg_run = runs_to_score(args.run, args.seg_run, args.model)
  Scorer(run, seg_run, args.batch_size)  # fails here, once, on a damaged or unusable run
  from pyspark.sql import SparkSession

  os.environ.setdefault('PYSPARK_PYTHON', sys.executable)  # local workers use this interpreter and its packages
  builder = SparkSession.builder.appName('jaxbrain-score')
  if args.master:
    builder = builder.master(args.master)
  spark = builder.getOrCreate()
  try:
    table = score(spark, inputs, run, args.out, seg_run, args.batch_size, overwrite=args.overwrite)
    total, failed = table.count(), table.where('error IS NOT NULL').count()
    print(f'scored {total - failed} slices ({failed} unreadable or unscored) into {args.out}')
  finally:
    spark.stop()
  return 0


if __name__ == '__main__':
  sys.exit(main())
