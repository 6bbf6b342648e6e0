"""What kind of tumour: every patient's shape features, their association with the genomic subtypes
by Buda, Saha and Mazurowski 2019's protocol (`jaxbrain.radiogenomics`), and grade, histological
type and subtype predicted from them (`jaxbrain.tumour_type`), beside the papers' figures.

  python -m experiments.radiogenomics --data-dir ../shared/data/lgg/kaggle_3m [--runs RUN ...] [--out DIR]
  python -m experiments.radiogenomics --apply-to DIR [--type-model FILE] [--seg-run RUN | --model DIR] [--out DIR]

From the true masks, and with `--runs` (the five `--fold K` runs, or the five ensemble members) also
from automatic masks, each patient's from a run that never trained on it. Writes to `--out`:
features.csv (every patient's shape and intensity features, and which masks they came from),
associations.csv and associations.json (every test: its table, patient count, exact p-value, and
whether it passes the Bonferroni threshold), prediction.json (each target's cross-validated ROC AUC, its interval and
permutation p-value, for each of `tumour_type.FEATURE_SETS`), type_model.json (the shape and
intensity models fitted on every patient's true masks; type_model_shape.json and
type_model_intensity.json the others),
features_by_subtype_<masks>.png, with automatic masks agreement.csv (each feature's medians and
correlation between the two sets of masks), and report.html. Prints the tables and the time it took.

`--apply-to DIR` applies a saved type model to the patient folders of DIR (patients it was not
trained on): their true masks where the folders hold masks, else the masks `jaxbrain predict` makes
with `--seg-run`, `--model` or the shipped model; writes type_probabilities.csv, saying which.
"""
from __future__ import annotations

import argparse
import csv
import html
import sys
import time
from pathlib import Path

import numpy as np

from jaxbrain import tumour_type
from jaxbrain.bundle import runs_to_score
from jaxbrain.data.clinical import GENOMIC_CLUSTERS, read_clinical
from jaxbrain.data.splits import NUM_FOLDS
from jaxbrain.errors import UserError, run_entry_point
from jaxbrain.files import write_csv, write_json
from jaxbrain.intensity import intensity_features
from jaxbrain.localize.predict import predict
from jaxbrain.machine import describe
from jaxbrain.pages import html_page
from jaxbrain.radiogenomics import (Association, associate, automatic_masks, bonferroni, feature_agreement,
                                    patient_images, patient_masks)
from jaxbrain.runs import finished, read_split
from jaxbrain.shape import FEATURES, shape_features
from jaxbrain.text import counted
from jaxbrain.train import train_and_evaluate

from experiments.configs import TYPE_IMAGE

# Buda et al. 2019 (abstract): their p-values, Bonferroni over their 10 hypotheses (p < 0.005
# significant). Their bounding ellipsoid volume ratio is associated "with all tested molecular
# subtypes (p < 0.02)"; which subtypes they tested is not in the text this project could read.
PAPER = {('bounding_ellipsoid_volume_ratio', 'RNASeqCluster'): 'p < 0.0002',
         ('margin_fluctuation', 'RNASeqCluster'): 'p < 0.005',
         ('angular_standard_deviation', 'RNASeqCluster'): 'p < 0.02'}
PAPER_ALSO = ('Buda et al. 2019 also report the bounding ellipsoid volume ratio associated with every subtype they '
              'tested at p < 0.02; the text read here does not name those subtypes, so no row claims one.')
# Buda et al. 2020 (Radiology: AI), cluster-of-clusters 2 vs rest from MRI by a CNN, patient-level
# cross-validated ROC AUC: from random initialization, from ImageNet, pretrained on glioblastoma MRI.
PAPER_2020 = 'CNN: 0.680 [0.538, 0.811] from scratch, 0.640 from ImageNet, 0.730 [0.605, 0.844] glioblastoma-pretrained'
TRUE, AUTOMATIC = 'true', 'automatic'
SAID = {TRUE: 'the true masks (the dataset\'s)', AUTOMATIC: 'automatic masks, each patient\'s from a run that '
        'never trained on it'}


def _rows(masks: str, found: list[Association], threshold: float) -> list[dict]:
  return [{'masks': masks, 'feature': a.feature, 'subtype': a.subtype, 'patients': a.patients, 'p': a.p,
           'significant': a.p < threshold, 'paper': PAPER.get((a.feature, a.subtype), ''),
           'table': '; '.join(f'{c}: {low}/{high}' for c, (low, high) in zip(a.categories, a.table))} for a in found]


def _plot(features: dict, clinical, path: Path, title: str) -> None:
  """One panel per (feature, subtype): each patient's value by the subtype's code."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  patients = sorted(features)
  fig, axes = plt.subplots(len(FEATURES), len(GENOMIC_CLUSTERS), figsize=(2.2 * len(GENOMIC_CLUSTERS), 7), squeeze=False)
  jitter = np.random.default_rng(0).uniform(-0.15, 0.15, len(patients))
  for row, name in enumerate(FEATURES):
    values = np.array([np.nan if (v := getattr(features[p], name)) is None else v for p in patients], float)
    for col, subtype in enumerate(GENOMIC_CLUSTERS):
      ax, codes = axes[row, col], clinical.column(subtype, patients)
      ax.scatter(codes + jitter, values, s=8, alpha=0.7)
      ax.axhline(np.nanmedian(values), color='0.6', lw=0.8)
      ax.set_xticks(sorted({int(c) for c in codes if not np.isnan(c)}))
      ax.set_xlabel(subtype if row == len(FEATURES) - 1 else '', fontsize=8)
      ax.set_ylabel(name.replace('_', ' ') if col == 0 else '', fontsize=8)
      ax.tick_params(labelsize=7)
  fig.suptitle(f'{title}; grey line: the median, where each feature is split', fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def _auc_said(r: dict) -> str:
  """'0.782 [0.647, 0.900]', or why a target was not scored."""
  if r['roc_auc'] is None:
    return r['note']
  interval = f' [{r["confidence_95"][0]:.3f}, {r["confidence_95"][1]:.3f}]' if r['confidence_95'] else ''
  return f'{r["roc_auc"]:.3f}{interval}'


def _range_said(r: dict) -> str:
  return f'{r["repeat_range"][0]:.3f}-{r["repeat_range"][1]:.3f}' if r['repeat_range'] else ''


def _p_said(r: dict) -> str:
  return f'{r["permutation_p"]:.3g}' if r['permutation_p'] is not None else ''


def _prediction_rows(masks: str, model: dict) -> list[dict]:
  return [{'masks': masks, 'target': name, 'patients': t['figures']['patients'], 'positives': t['figures']['positives'],
           **{k: t['figures'].get(k) for k in ('roc_auc', 'confidence_95', 'repeat_range', 'permutation_p', 'note')},
           'paper': PAPER_2020 if name == tumour_type.TARGETS[0].name else ''} for name, t in model['targets'].items()]


def _page(out: Path, rows: list[dict], predicted: list[dict], threshold: float, facts: str) -> None:
  header = ''.join(f'<th>{h}</th>' for h in ('masks', 'feature', 'subtype', 'patients', 'p (exact)', 'Buda et al. 2019',
                                             'table: code: at or below / above the median'))
  association_rows = ''.join(f'<tr{" style=font-weight:600" if r["significant"] else ""}><td>{r["masks"]}</td>'
                 f'<td>{r["feature"].replace("_", " ")}</td><td>{r["subtype"]}</td><td class=num>{r["patients"]}</td>'
                 f'<td class=num>{r["p"]:.2g}</td><td>{html.escape(r["paper"])}</td><td>{r["table"]}</td></tr>'
                 for r in rows)
  predicted_rows = ''.join(
      f'<tr><td>{r["masks"]}</td><td>{html.escape(r["target"])}</td><td class=num>{r["positives"]} / {r["patients"]}</td>'
      f'<td class=num>{html.escape(_auc_said(r))}</td><td class=num>{_range_said(r)}</td><td class=num>{_p_said(r)}</td>'
      f'<td>{html.escape(r["paper"])}</td></tr>' for r in predicted)
  plots = ''.join(f'<h2>Features by subtype: {html.escape(SAID[m])}</h2><img class=wide src="features_by_subtype_{m}.png" '
                  f'alt="each feature by each subtype, {m} masks">' for m in dict.fromkeys(r['masks'] for r in rows))
  body = (f'<h1>Tumour shape and tumour type</h1><p>{html.escape(facts)}</p><p class=muted>Research '
          'use only. 80 patients: wide intervals, and most tests cannot reach significance; grade and type are decided '
          'by pathology, a subtype by sequencing, not by a scan. The codes are data.csv\'s; the dataset gives no '
          'legend.</p><h2>Predicted from shape and intensity</h2><p class=muted>'
          + html.escape(tumour_type.__doc__.split('\n\n')[1]) + '</p><table><tr><th>masks</th><th>target</th>'
          '<th>positives / patients</th><th>ROC AUC [95% CI]</th>'
          f'<th>over repeats</th><th>permutation p</th><th>Buda et al. 2020</th></tr>{predicted_rows}</table>'
          f'<h2>Shape against subtype</h2><p class=muted>Bold: p below the Bonferroni threshold {threshold:.2g}. '
          f'{html.escape(PAPER_ALSO)}</p><table><tr>{header}</tr>{association_rows}</table>{plots}')
  (out / 'report.html').write_text(html_page('jaxbrain radiogenomics', body), encoding='utf-8')


def image_model(data_dir: str, key: str, workdir: str, clinical, **flags) -> dict:
  """The image model of `key` (`experiments.configs.TYPE_IMAGE`): its five `--fold K` runs (each
  skipped when finished, resumed when started), every patient's probability the mean of its test
  slices' in the one fold that tested it, and their figures (`tumour_type.out_of_fold_figures`).
  A patient tested by two folds, or trained on by the fold that tests it, is refused."""
  probability: dict[str, float] = {}
  for fold in range(NUM_FOLDS):
    config = TYPE_IMAGE.with_flags(experiment=f'{TYPE_IMAGE.experiment}-{key}', type_target=key, data_dir=data_dir,
                                   fold=fold, workdir=workdir, **flags)
    run = config.run_dir
    if not finished(run.path):
      train_and_evaluate(config, resume=run.config.is_file(), progress=False)
    trained = set(read_split(run.path)['train'])
    with open(run.test_predictions, newline='') as f:
      slices = list(csv.DictReader(f))
    for patient in dict.fromkeys(row['patient'] for row in slices):
      if patient in probability or patient in trained:
        raise UserError(f'{run}: tests {patient}, which another fold tested or this one trained on')
      probability[patient] = float(np.mean([float(r['probability']) for r in slices if r['patient'] == patient]))
  patients = sorted(probability)
  labels = tumour_type.target(key).labels(clinical, patients)
  figures = tumour_type.out_of_fold_figures(labels, np.array([probability[p] for p in patients]))
  return {**figures, 'patient_ids': patients, 'runs': f'{workdir}/{TYPE_IMAGE.experiment}-{key}'}


def _analyse(args, out: Path) -> tuple[list[dict], list[dict], float, dict, int]:
  """Features, associations and the type models from each set of masks: (association rows,
  prediction rows, the Bonferroni threshold, the true masks' type models by feature set, patients)."""
  clinical = read_clinical(args.data_dir)
  sources, images = {TRUE: (patient_masks(args.data_dir), {})}, patient_images(args.data_dir)
  if args.runs:
    sources[AUTOMATIC] = automatic_masks(args.runs, args.data_dir, out / 'automatic')
  rows, predicted, feature_rows, models, described = [], [], [], {}, {}
  for masks, (volumes, made_by) in sources.items():
    features = described[masks] = {patient: shape_features(volume) for patient, volume in sorted(volumes.items())}
    intensities = {patient: intensity_features(images[patient], volume) for patient, volume in volumes.items()}
    found = associate(features, clinical, FEATURES, GENOMIC_CLUSTERS)
    rows += _rows(masks, found, bonferroni(found))
    feature_rows += [{'patient': p, 'masks': masks, 'made_by': str(made_by.get(p, 'data.csv\'s folder')),
                      **f.as_dict(), **intensities[p]} for p, f in features.items()]
    _plot(features, clinical, out / f'features_by_subtype_{masks}.png', SAID[masks])
    for name, names in tumour_type.FEATURE_SETS.items():
      model = tumour_type.train(features, clinical, SAID[masks], args.repeats, args.permutations,
                                intensities=intensities, names=names)
      models.setdefault(masks, {})[name] = model
      predicted += _prediction_rows(masks if name == 'shape' else f'{name} ({masks} masks)', model)
  for key in args.image_model or ():
    figures = image_model(args.data_dir, key, args.workdir, clinical)
    name = tumour_type.target(key).name
    predicted += _prediction_rows(f'images ({figures["runs"]})', {'targets': {name: {'figures': figures}}})
    for masks, by_features in models.items():
      if name in (model := by_features['shape'])['targets']:
        both = tumour_type.together(clinical, key, figures, model['targets'][name]['figures'])
        predicted += _prediction_rows(f'images and shape ({masks} masks)', {'targets': {name: {'figures': both}}})
  write_csv(out / 'features.csv', feature_rows)
  write_csv(out / 'associations.csv', rows)
  if AUTOMATIC in described:
    agreement = feature_agreement(described[TRUE], described[AUTOMATIC], FEATURES)
    write_csv(out / 'agreement.csv', agreement)
    print(agreement_table(agreement))
  return rows, predicted, bonferroni(found), models[TRUE], len(sources[TRUE][0])


def agreement_table(agreement: list[dict]) -> str:
  """`feature_agreement`'s rows as Markdown (n/a where a feature has fewer than two patients)."""
  said = lambda a, key, digits: f'{a[key]:.{digits}f}' if key in a else 'n/a'
  return ('| feature | patients | median, true masks | median, automatic | correlation | same side of the median |\n'
          '|---|---|---|---|---|---|\n' + '\n'.join(
              f'| {a["feature"]} | {a["patients"]} | {said(a, "median_true", 3)} | {said(a, "median_automatic", 3)} | '
              f'{said(a, "correlation", 2)} | {said(a, "same_side_of_median", 2)} |' for a in agreement))


def _print_tables(rows: list[dict], predicted: list[dict], threshold: float) -> None:
  print('| masks | target | positives / patients | ROC AUC [95% CI] | over repeats | permutation p |\n|---|---|---|---|---|---|')
  for r in predicted:
    print(f'| {r["masks"]} | {r["target"]} | {r["positives"]} / {r["patients"]} | {_auc_said(r)} | {_range_said(r)} '
          f'| {_p_said(r)} |')
  print(f'Buda et al. 2020, cluster-of-clusters 2 vs rest: {PAPER_2020}\n')
  print('| masks | feature | subtype | patients | p | Buda 2019 |\n|---|---|---|---|---|---|')
  for r in rows:
    mark = '**' if r['significant'] else ''
    print(f'| {r["masks"]} | {r["feature"]} | {r["subtype"]} | {r["patients"]} | {mark}{r["p"]:.2g}{mark} | {r["paper"]} |')
  print(f'Bonferroni threshold {threshold:.2g}. {PAPER_ALSO}')


def _apply(args, out: Path) -> None:
  """type_probabilities.csv for the patient folders of `--apply-to`."""
  model = tumour_type.load(args.type_model or out / 'type_model.json')
  folder = Path(args.apply_to)
  if any(folder.glob('*/*_mask.*')):
    volumes = patient_masks(folder)
    shapes = {p: shape_features(v) for p, v in volumes.items()}
    intensities = ({p: intensity_features(images, volumes[p]) for p, images in patient_images(folder).items()}
                   if tumour_type.needs_intensity(model) else None)
    found, masks = tumour_type.apply(model, shapes, intensities), 'the folders\' true masks'
  else:
    run, seg_run = runs_to_score(None, args.seg_run, args.model)
    summary = predict([folder], run, out / 'apply_masks', seg_run_dir=seg_run, overwrite=True,
                      type_model=args.type_model or out / 'type_model.json')
    found = {p: {k: v for k, v in e['type_probabilities'].items() if k in model['targets']} for p, e in summary.items()}
    masks = f'predicted by {seg_run} (jaxbrain predict, in {out / "apply_masks"})'
  write_csv(out / 'type_probabilities.csv', [{'patient': p, 'masks': masks, **probabilities}
                                             for p, probabilities in sorted(found.items())])
  print(f'{counted(len(found), "patient")}, masks: {masks}; wrote {out / "type_probabilities.csv"} '
        f'({tumour_type.RESEARCH_ONLY})')


def run(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--data-dir', help='the kaggle_3m folder (patient folders and data.csv)')
  parser.add_argument('--runs', nargs='*', default=[], help='segmentation runs for the automatic masks')
  parser.add_argument('--out', default='checkpoints/radiogenomics', help='where the tables, models, plots and page go')
  parser.add_argument('--repeats', type=int, default=tumour_type.REPEATS, help='repeats of the five-fold cross-validation')
  parser.add_argument('--permutations', type=int, default=tumour_type.PERMUTATIONS, help='label permutations per target')
  parser.add_argument('--image-model', nargs='*', metavar='TARGET', choices=tumour_type.TARGET_KEYS,
                      help='also train and score the image model (five folds of experiments.configs.TYPE_IMAGE) for '
                           'these targets (none named: coc2); about 40 min a target on a 2-core CPU')
  parser.add_argument('--workdir', default='checkpoints', help='where the image model\'s fold runs go')
  parser.add_argument('--apply-to', metavar='DIR', help='patient folders to apply a saved type model to')
  parser.add_argument('--type-model', metavar='FILE', help='with --apply-to: the model (default: OUT/type_model.json)')
  parser.add_argument('--seg-run', help='with --apply-to, for folders without masks: the segmenter')
  parser.add_argument('--model', metavar='DIR', help='with --apply-to, for folders without masks: a model bundle')
  args = parser.parse_args(argv)
  if args.image_model == []:
    args.image_model = ['coc2']
  started, out = time.perf_counter(), Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  if args.apply_to:
    _apply(args, out)
    return 0
  if not args.data_dir:
    parser.error('--data-dir is needed (or --apply-to)')
  rows, predicted, threshold, models, patients = _analyse(args, out)
  for name, model in models.items():
    tumour_type.save(model, out / tumour_type.model_file(name))
  minutes = (time.perf_counter() - started) / 60
  facts = (f'{args.data_dir}: {patients} patients; {minutes:.1f} min on {describe()}; '
           f'python -m experiments.radiogenomics --data-dir {args.data_dir}' + (' --runs ...' if args.runs else ''))
  write_json(out / 'associations.json', {'threshold': threshold, 'facts': facts, 'tests': rows})
  write_json(out / 'prediction.json', {'facts': facts, 'recipe': tumour_type.__doc__, 'targets': predicted})
  _page(out, rows, predicted, threshold, facts)
  _print_tables(rows, predicted, threshold)
  print(f'{facts}; written to {out}')
  return 0


def main(argv: list[str] | None = None) -> int:
  return run_entry_point('python -m experiments.radiogenomics', lambda: run(argv))


if __name__ == '__main__':
  sys.exit(main())
