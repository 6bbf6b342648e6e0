"""Shape features of every patient's tumour and their association with the genomic subtypes, by
Buda, Saha and Mazurowski 2019's protocol (`jaxbrain.radiogenomics`), beside the paper's p-values.

  python -m experiments.radiogenomics --data-dir ../shared/data/lgg/kaggle_3m [--runs RUN ...] [--out DIR]

From the true masks, and with `--runs` (the five `--fold K` runs, or the five ensemble members) also
from automatic masks, each patient's from a run that never trained on it. Writes to `--out`:
features.csv (every patient's features, and which masks they came from), associations.csv and
associations.json (every test: its table, patient count, exact p-value, and whether it passes the
Bonferroni threshold), features_by_subtype_<masks>.png, and report.html with the table beside the
paper's and the plots. Prints the table and the time it took.
"""
from __future__ import annotations

import argparse
import html
import sys
import time
from pathlib import Path

import numpy as np

from jaxbrain.data.clinical import GENOMIC_CLUSTERS, read_clinical
from jaxbrain.errors import run_entry_point
from jaxbrain.files import write_csv, write_json
from jaxbrain.machine import describe
from jaxbrain.pages import STYLE
from jaxbrain.radiogenomics import Association, associate, automatic_masks, bonferroni, patient_masks
from jaxbrain.shape import FEATURES, shape_features

# Buda et al. 2019 (abstract): their p-values, Bonferroni over their 10 hypotheses (p < 0.005
# significant). Their bounding ellipsoid volume ratio is associated "with all tested molecular
# subtypes (p < 0.02)"; which subtypes they tested is not in the text this project could read.
PAPER = {('bounding_ellipsoid_volume_ratio', 'RNASeqCluster'): 'p < 0.0002',
         ('margin_fluctuation', 'RNASeqCluster'): 'p < 0.005',
         ('angular_standard_deviation', 'RNASeqCluster'): 'p < 0.02'}
PAPER_ALSO = ('Buda et al. 2019 also report the bounding ellipsoid volume ratio associated with every subtype they '
              'tested at p < 0.02; the text read here does not name those subtypes, so no row claims one.')
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


def _page(out: Path, rows: list[dict], threshold: float, facts: str) -> None:
  header = ''.join(f'<th>{h}</th>' for h in ('masks', 'feature', 'subtype', 'patients', 'p (exact)', 'Buda et al. 2019',
                                             'table: code: at or below / above the median'))
  body = ''.join(f'<tr{" style=font-weight:600" if r["significant"] else ""}><td>{r["masks"]}</td>'
                 f'<td>{r["feature"].replace("_", " ")}</td><td>{r["subtype"]}</td><td class=num>{r["patients"]}</td>'
                 f'<td class=num>{r["p"]:.2g}</td><td>{html.escape(r["paper"])}</td><td>{r["table"]}</td></tr>'
                 for r in rows)
  plots = ''.join(f'<h2>Features by subtype: {html.escape(SAID[m])}</h2><img class=wide src="features_by_subtype_{m}.png" '
                  f'alt="each feature by each subtype, {m} masks">' for m in dict.fromkeys(r['masks'] for r in rows))
  page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
          f'content="width=device-width, initial-scale=1"><title>jaxbrain radiogenomics</title><style>{STYLE}</style>'
          f'</head><body><h1>Tumour shape and genomic subtype</h1><p>{html.escape(facts)}</p><p class=muted>Research '
          'use only. 80 patients: most tests cannot reach significance, and a subtype is decided by sequencing, not by a '
          f'scan. Bold: p below the Bonferroni threshold {threshold:.2g} (0.05 over the {len(rows) // max(1, len({r["masks"] for r in rows}))} '
          'hypotheses of each set of masks). The subtype codes are data.csv\'s; the dataset gives no legend. '
          f'{html.escape(PAPER_ALSO)}</p>'
          f'<table><tr>{header}</tr>{body}</table>{plots}</body></html>\n')
  (out / 'report.html').write_text(page, encoding='utf-8')


def run(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--data-dir', required=True, help='the kaggle_3m folder (patient folders and data.csv)')
  parser.add_argument('--runs', nargs='*', default=[], help='segmentation runs for the automatic masks')
  parser.add_argument('--out', default='checkpoints/radiogenomics', help='where the table, plots and page go')
  args = parser.parse_args(argv)
  started, out = time.perf_counter(), Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  clinical = read_clinical(args.data_dir)
  sources = {TRUE: (patient_masks(args.data_dir), {})}
  if args.runs:
    sources[AUTOMATIC] = automatic_masks(args.runs, args.data_dir, out / 'automatic')
  rows, feature_rows = [], []
  for masks, (volumes, made_by) in sources.items():
    features = {patient: shape_features(volume) for patient, volume in sorted(volumes.items())}
    found = associate(features, clinical, FEATURES, GENOMIC_CLUSTERS)
    rows += _rows(masks, found, bonferroni(found))
    feature_rows += [{'patient': p, 'masks': masks, 'made_by': str(made_by.get(p, 'data.csv\'s folder')),
                      **f.as_dict()} for p, f in features.items()]
    _plot(features, clinical, out / f'features_by_subtype_{masks}.png', SAID[masks])
  threshold = bonferroni(found)
  write_csv(out / 'features.csv', feature_rows)
  write_csv(out / 'associations.csv', rows)
  minutes = (time.perf_counter() - started) / 60
  facts = (f'{args.data_dir}: {len(sources[TRUE][0])} patients; {minutes:.1f} min on {describe()}; '
           f'python -m experiments.radiogenomics --data-dir {args.data_dir}' + (' --runs ...' if args.runs else ''))
  write_json(out / 'associations.json', {'threshold': threshold, 'facts': facts, 'tests': rows})
  _page(out, rows, threshold, facts)
  print('| masks | feature | subtype | patients | p | Buda 2019 |\n|---|---|---|---|---|---|')
  for r in rows:
    mark = '**' if r['significant'] else ''
    print(f'| {r["masks"]} | {r["feature"]} | {r["subtype"]} | {r["patients"]} | {mark}{r["p"]:.2g}{mark} | {r["paper"]} |')
  print(f'Bonferroni threshold {threshold:.2g}. {PAPER_ALSO}\n{facts}; written to {out}')
  return 0


def main(argv: list[str] | None = None) -> int:
  return run_entry_point('python -m experiments.radiogenomics', lambda: run(argv))


if __name__ == '__main__':
  sys.exit(main())
