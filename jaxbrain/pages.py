"""Self-contained HTML pages that people open in a browser: `report.html` of a training run and of a
`jaxbrain predict` output.

Both work from `file://` with no server and no network: the page's numbers are inline JSON and
text, its images are the PNG files beside it, referenced by relative path; the prediction viewer
loads a slice's image only when that slice is shown, so a tree of thousands of slices stays a page
that opens at once. Layout is one column that fits a phone-width window.
"""
from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Sequence

from jaxbrain.folders import PredictionDir, RunDir
from jaxbrain.postprocess import MaskRule
from jaxbrain.runs import trained_on_phantom
from jaxbrain.shape import FEATURES
from jaxbrain.text import counted

STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:960px;padding:12px;color:#1d1d1f}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:2px 10px 2px 0;text-align:left;overflow-wrap:anywhere}
th,td:first-child{white-space:nowrap}th{font-weight:600}.num{font-variant-numeric:tabular-nums}.muted{color:#666}
img{max-width:100%;height:auto}.figures img{max-width:min(100%,460px);margin:4px;vertical-align:top}
.figures img.wide{max-width:100%}
.gallery img{width:min(46%,220px);margin:3px}
.viewer{max-width:512px}.frame{position:relative;background:#000}
.frame img{width:100%;display:block}.caption{position:absolute;left:0;right:0;top:0;padding:4px 8px;
background:rgba(0,0,0,.55);color:#fff;font-variant-numeric:tabular-nums}
.caption.tumor{background:rgba(170,20,20,.75)}input[type=range]{width:100%}
svg.plot{width:100%;max-width:512px;height:auto;background:#fafafa;border:1px solid #eee}
pre{white-space:pre-wrap;font-size:12px;background:#f6f6f6;padding:8px}
.warnings{background:#fff4e5;border-left:4px solid #e08a00;padding:2px 12px;margin:1em 0}
.banner{background:#fde8e8;border-left:4px solid #c0392b;padding:6px 12px;margin:1em 0}
dl.defs dt{font-weight:600;margin-top:.3em}dl.defs dd{margin:0 0 0 1.2em}
"""

# What each figure on a page means, in a line: pages show it beside the figures they hold.
METRICS_SAID = {
    'accuracy': 'share of slices labelled right (tumor or not)',
    'balanced_accuracy': 'mean of sensitivity and specificity: not swayed by how many slices hold a tumor',
    'roc_auc': 'how well the probability ranks tumor slices above tumor-free ones, over every threshold (1 perfect, '
               '0.5 chance)',
    'sensitivity': 'share of tumor slices labelled tumor',
    'specificity': 'share of tumor-free slices labelled tumor-free',
    'f1': 'harmonic mean of sensitivity and precision (the share of slices labelled tumor that hold one)',
    'loss': 'mean cross-entropy of the probabilities (the training objective; lower is better)',
    'gradcam_pointing_game': 'share of tumor slices whose Grad-CAM peak lies inside the true mask; coarse: Grad-CAM '
                             'comes from the last block\'s grid, 1/32 of the image (4x4 cells at 128 px), so it '
                             'points at a region, not a pixel',
    'dice_per_volume': 'overlap of predicted and true tumor, 2|A∩B| / (|A| + |B|), per patient\'s stack of slices, '
                       'averaged over patients (1 perfect; a patient with no tumor and no prediction scores 1)',
    'iou_per_volume': 'the same overlap as intersection over union, |A∩B| / |A∪B|',
    'dice_tumor_slices': 'Dice of each slice that holds a tumor, averaged over those slices',
    'false_positive_rate': 'share of tumor-free slices given a tumor mask',
    'tumor_detection_rate': 'share of tumor slices given a mask with at least one pixel',
    'volumes': 'patients (stacks of slices) scored',
}


def _definitions(names) -> str:
  """The one-line meaning of each figure in `names` that has one."""
  said = [f'<dt>{html.escape(n.replace("_", " "))}</dt><dd>{html.escape(METRICS_SAID[n])}</dd>'
          for n in dict.fromkeys(names) if n in METRICS_SAID]
  return f'<h3>What the figures mean</h3><dl class="defs">{"".join(said)}</dl>' if said else ''


PHANTOM_BANNER = ('<div class="banner"><strong>Synthetic data.</strong> {what} jaxbrain\'s phantom images, made by a '
                  'program: its figures show that the code runs and mean nothing for patients.</div>')


OVERLAYS_SAID = ('Test slices, the FLAIR channel in gray. Green outline: the true tumor (the dataset\'s mask). Red: the '
                 'predicted mask, post-processed as validation chose. Red to yellow (Grad-CAM images): where the '
                 'classifier looked, from a grid 1/32 of the image, so a region, not a pixel.')


def _checkpoint_said(checkpoint: str) -> str:
  """What a checkpoint folder name ('checkpoints/best/76') means to a reader."""
  kind, _, step = checkpoint.rpartition('/')
  if kind.endswith('best'):
    return f'{checkpoint}: the weights after training step {step}, the epoch validation chose'
  if kind.endswith('last'):
    return f'{checkpoint}: the last weights (step {step}): validation chose no earlier epoch'
  if checkpoint in ('members', 'weights'):
    return f'{checkpoint}: each member\'s weights as it chose them on validation'
  return checkpoint

VIEWER_SCRIPT = """
const data = JSON.parse(document.getElementById('slices').textContent);
function show(section, index) {
  const patient = data.patients[+section.dataset.patient];
  const s = patient.slices[index];
  const img = section.querySelector('.frame img');
  img.src = s.image;
  img.alt = patient.name + ' slice ' + s.slice;
  const caption = section.querySelector('.caption');
  let text = 'slice ' + s.slice + ' \\u00b7 p(tumor) ' + s.probability.toFixed(3) + ' \\u00b7 ' +
             (s.label ? 'tumor' : 'no tumor');
  if (s.tumor_pixels !== undefined) text += ' \\u00b7 ' + s.tumor_pixels + ' px';
  caption.textContent = text;
  caption.classList.toggle('tumor', s.label === 1);
  const cursor = section.querySelector('.cursor');
  const x = cursor.dataset.x0 * 1 + index * cursor.dataset.dx;
  cursor.setAttribute('x1', x);
  cursor.setAttribute('x2', x);
  section.querySelector('input').value = index;
}
for (const section of document.querySelectorAll('section.patient')) {
  const slider = section.querySelector('input');
  slider.addEventListener('input', () => show(section, +slider.value));
  show(section, +slider.value);
}
"""


def html_page(title: str, body: str, script: str = '') -> str:
  """A whole self-contained page: the house style, `body`, and `script` if any."""
  return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
          f'<meta name="viewport" content="width=device-width, initial-scale=1">'
          f'<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n{body}\n'
          + (f'<script>{script}</script>\n' if script else '') + '</body></html>\n')


def _inline_json(value) -> str:
  """JSON safe inside a <script> element (no `</` that would close it)."""
  return json.dumps(value, allow_nan=False).replace('</', '<\\/')


def _number(value) -> str:
  if isinstance(value, float):
    return 'n/a' if math.isnan(value) else f'{value:.3f}'
  return html.escape(str(value))


def _metrics_table(metrics: dict, intervals: dict) -> str:
  """Scalar metrics, each with its 95% interval where one was computed."""
  rows = []
  for name, value in metrics.items():
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      continue
    interval = intervals.get(name)
    shown = f' [{_number(interval[0])}, {_number(interval[1])}]' if interval else ''
    rows.append(f'<tr><td>{html.escape(name.replace("_", " "))}</td><td class="num">{_number(value)}{shown}</td></tr>')
  return '<table>' + ''.join(rows) + '</table>'


def _probability_plot(slices: list[dict], threshold: float) -> str:
  """SVG: tumor probability (and tumor area, scaled to its maximum) against slice order, with its
  axes (probability 0 to 1; the first and last slice numbers), the decision threshold dashed, and a
  cursor the viewer moves to the shown slice."""
  width, height, left, bottom, pad = 300.0, 104.0, 18.0, 14.0, 6.0
  dx = (width - left - pad) / max(len(slices) - 1, 1)
  y = lambda v: height - bottom - v * (height - bottom - pad)  # noqa: E731
  points = ' '.join(f'{left + i * dx:.1f},{y(s["probability"]):.1f}' for i, s in enumerate(slices))
  axis = 'font-size="8" fill="#555"'
  parts = [f'<line x1="{left}" x2="{left}" y1="{y(1):.1f}" y2="{y(0):.1f}" stroke="#bbb"/>',
           f'<line x1="{left}" x2="{width - pad}" y1="{y(0):.1f}" y2="{y(0):.1f}" stroke="#bbb"/>',
           f'<text x="{left - 3}" y="{y(1) + 3:.1f}" text-anchor="end" {axis}>1</text>',
           f'<text x="{left - 3}" y="{y(0) + 3:.1f}" text-anchor="end" {axis}>0</text>',
           f'<text x="{left}" y="{height - 3}" {axis}>slice {html.escape(str(slices[0]["slice"]))}</text>',
           f'<text x="{width - pad}" y="{height - 3}" text-anchor="end" {axis}>'
           f'slice {html.escape(str(slices[-1]["slice"]))}</text>',
           f'<polyline points="{points}" fill="none" stroke="#c0392b" stroke-width="1.5"/>',
           f'<line class="threshold" x1="{left}" x2="{width - pad}" y1="{y(threshold):.1f}" y2="{y(threshold):.1f}" '
           f'stroke="#999" stroke-dasharray="3 3" data-threshold="{threshold:g}"/>']
  legend = f'red: tumor probability (0 to 1); dashed: the decision threshold, {threshold:g}'
  if 'tumor_pixels' in slices[0]:
    most = max(s['tumor_pixels'] for s in slices) or 1
    area = ' '.join(f'{left + i * dx:.1f},{y(s["tumor_pixels"] / most):.1f}' for i, s in enumerate(slices))
    parts.append(f'<polyline points="{area}" fill="none" stroke="#2c7fb8" stroke-width="1.5"/>')
    legend += f'; blue: tumor area (its largest, {most} px, at the top)'
  parts.append(f'<line class="cursor" data-x0="{left}" data-dx="{dx:.4f}" x1="{left}" x2="{left}" y1="0" '
               f'y2="{y(0):.1f}" stroke="#333"/>')
  return (f'<svg class="plot" viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-label="{legend}">'
          + ''.join(parts) + f'</svg><div class="muted">{legend}; across: the slices in order</div>')


def _patient_facts(total: dict) -> str:
  """A patient's line on the page from its summary.json entry: slices, tumour, shape, type, disagreement."""
  facts = f'{counted(total["slices"], "slice")}, {len(total["slices_with_tumor"])} predicted with tumor'
  if 'volume_voxels' in total:
    facts += f', predicted tumor {total["volume_voxels"]} pixels in all'
  if 'tumor_volume_ml' in total:
    facts += f' ({total["tumor_volume_ml"]:.2f} ml)'
  if total.get('shape', {}).get('angular_standard_deviation') is not None:
    facts += '; shape: ' + ', '.join(f'{name.replace("_", " ")} {total["shape"][name]:.3f}' for name in FEATURES
                                    if total['shape'][name] is not None)
  if 'type_probabilities' in total:
    said = {k: v for k, v in total['type_probabilities'].items() if isinstance(v, float)}
    facts += (f'; from its {total["type_probabilities"]["features"]} (research use only): '
              + ', '.join(f'p({name}) {p:.2f}' for name, p in said.items()))
  if 'max_disagreement' in total:
    disputed = total.get('slices_where_members_disagree', [])
    facts += (f'; the ensemble\'s members disagree on the label of {len(disputed)} slice{"s" * (len(disputed) != 1)}'
              + (f' ({", ".join(map(str, disputed))})' if disputed else '')
              + f', largest spread of their probabilities {total["max_disagreement"]:.2f}')
  return facts


def write_prediction_page(out_dir: Path, patients: dict[str, list[dict]], totals: dict[str, dict],
                            runs: list[dict], threshold: float, how: str, warnings: Sequence[str] = ()) -> Path:
  """`out_dir/report.html`: one section per patient with a slice viewer (slider or arrow keys; the
  overlay with the slice's probability and label on it), a probability plot and the patient's totals.

  `patients`: name -> slices in order, each {'slice', 'image' (path relative to out_dir),
  'probability', 'label'[, 'tumor_pixels']}; `totals`: name -> the patient's summary.json entry;
  `runs`: what scored them ({'role', 'run', 'experiment', 'checkpoint'}); `how`: how labels and
  masks came about, shown under the title; `warnings`: what the console warned of, repeated above
  the patients (a page is often all that is passed on).
  """
  names = list(patients)
  sections = []
  for index, name in enumerate(names):
    slices = patients[name]
    start = max(range(len(slices)), key=lambda i: slices[i]['probability'])  # open on the likeliest tumor
    facts = _patient_facts(totals[name])
    sections.append(
        f'<section class="patient" data-patient="{index}"><h2>{html.escape(name)}</h2><p>{facts}</p>'
        f'<div class="viewer"><div class="frame"><img alt=""><div class="caption"></div></div>'
        f'<input type="range" min="0" max="{len(slices) - 1}" value="{start}" '
        f'aria-label="slice of {html.escape(name)}"></div>{_probability_plot(slices, threshold)}</section>')
  run_rows = ''.join(f'<tr><td>{html.escape(r["role"])}</td><td>{html.escape(str(r["run"]))}</td>'
                     f'<td>{html.escape(str(r.get("experiment", "")))}</td>'
                     f'<td>{html.escape(_checkpoint_said(str(r.get("checkpoint", ""))))}</td></tr>' for r in runs)
  phantom = [str(r['run']) for r in runs if r.get('phantom_only')]
  warned = ''.join(f'<li>{html.escape(w)}</li>' for w in dict.fromkeys(warnings))
  body = (f'<h1>jaxbrain predict: {counted(len(names), "patient")}</h1>'
          + (PHANTOM_BANNER.format(what=html.escape(', '.join(phantom)) + ' learned from') if phantom else '')
          + '<p class="muted">Drag a slider or use the arrow keys on it. p(tumor): the model\'s probability that '
          'the slice holds a tumor; a slice is labelled tumor at or above the decision threshold. Overlays: '
          + ('the predicted mask in red.' if any('tumor_pixels' in s[0] for s in patients.values()) else
             'Grad-CAM of the classifier (where it looked), red to yellow; coarse: it comes from a grid 1/32 of the '
             'image.')
          + f' {html.escape(how)}</p>'
          + ''.join(f'<p class="model">{html.escape(r["model"])}</p>' for r in runs if r.get('model'))
          + f'<table><tr><th>role</th><th>run</th><th>experiment</th><th>checkpoint</th></tr>{run_rows}</table>'
          + (f'<div class="warnings"><h2>Warnings</h2><ul>{warned}</ul></div>' if warned else '')
          + ''.join(sections)
          + f'<script type="application/json" id="slices">'
          f'{_inline_json({"patients": [{"name": n, "slices": patients[n]} for n in names]})}</script>')
  path = PredictionDir(out_dir).report
  path.write_text(html_page('jaxbrain predict', body, VIEWER_SCRIPT), encoding='utf-8')
  return path


def _read_json(path: Path) -> dict:
  return json.loads(path.read_text(encoding='utf-8')) if path.is_file() else {}


def _intervals_said(test: dict) -> str:
  """What the brackets of the test table are, or why there are none (`metrics.patient_intervals`)."""
  if test.get('confidence_95'):
    return '95% patient-bootstrap intervals in brackets.'
  return f'No 95% intervals: {test.get("confidence_95_note", "none were computed")}.'


def write_run_page(run_dir: RunDir | Path) -> Path:
  """The run's report.html from its own files: what was trained on what split, validation and
  test metrics with intervals, the selected checkpoint, curves, ROC, confusion matrix, a few
  overlays, and the whole config."""
  run = RunDir.of(run_dir)
  run_dir = run.path
  config, final = _read_json(run.config), _read_json(run.final_metrics)
  counts = final.get('counts') or config.get('counts', {})
  split = ' / '.join(f'{counts.get(f"{side}_patients", "?")} patients, {counts.get(f"{side}_slices", "?")} slices'
                     for side in ('train', 'validation', 'test'))
  selected = final.get('selected_checkpoint', {})
  test = final.get('test', {})
  decision = _read_json(run.decision)
  native = ''.join(f'<h3>{title}</h3>{_metrics_table(test[key], test[key].get("confidence_95") or {})}'
                   for key, title in (('native', 'at 256x256, masks as the model gives them'),
                                      ('native_postprocessed', 'at 256x256, with the post-processing chosen on '
                                       'validation: ' + html.escape(MaskRule.from_json(decision.get('mask_rule'))
                                                                   .in_words())))
                   if isinstance(test.get(key), dict))
  shown_metrics = [*test, *final.get('validation', {}), *(k for key in ('native', 'native_postprocessed')
                                                          for k in test.get(key, {}))]
  figures = ''.join(f'<img src="{name}" alt="{name}"{" class=wide" * (name == "curves.png")}>'
                    for name in RunDir.PLOTS if run.plot(name).is_file())
  shown = [p for folder in (run.overlays, run.gradcam) for p in sorted(folder.glob('*.png'))][:8]
  gallery = ''.join(f'<img src="{p.relative_to(run_dir).as_posix()}" alt="{html.escape(p.stem)}" loading="lazy">'
                    for p in shown)
  body = (f'<h1>{html.escape(final.get("experiment", run_dir.parent.name))}: {html.escape(run_dir.name)}</h1>'
          + (PHANTOM_BANNER.format(what='This run was trained and tested on') if run.config.is_file()
             and trained_on_phantom(run_dir, config) else '')
          + f'<p>{html.escape(final.get("model", ""))}<br>init: {html.escape(str(final.get("init", "")))}<br>'
          f'data: {html.escape(str(final.get("data", "")))}<br>{html.escape(str(final.get("split", "")))} split'
          + (f', fold {final["fold"]}' if final.get('fold') is not None else '')
          + (f', ensemble member {final["member"]}' if final.get('member') is not None else '')
          + f' (train / validation / test): {split}</p>'
          + ('<h2>Test patients (used for no choice)</h2>' if final.get('member') is None else
             f'<h2>Ensemble member {_number(final["member"])}: the decision set (the seed\'s validation patients, '
             'used by this member for no choice)</h2>')
          + f'{_metrics_table(test, test.get("confidence_95") or {})}'
          f'<p class="muted">{html.escape(_intervals_said(test))}</p>' + native +
          f'<h2>Validation patients (chose the checkpoint)</h2>{_metrics_table(final.get("validation", {}), {})}'
          f'<p>Selected checkpoint: epoch {_number(selected.get("epoch", "?"))} by {html.escape(str(selected.get("metric", "")))}'
          f' ({_number(selected.get("value", float("nan")))})'
          + (f'; {html.escape(_checkpoint_said("checkpoints/" + selected["checkpoint"]))}' if selected.get('checkpoint')
             else '') + '.</p>' + _definitions(shown_metrics)
          + (f'<h2>Curves and test plots</h2><div class="figures">{figures}</div>' if figures else '')
          + (f'<h2>Test overlays</h2><p class="muted">{OVERLAYS_SAID}</p><div class="gallery">{gallery}</div>'
             if gallery else '')
          + f'<h2>Config</h2><details><summary>config.json</summary><pre>'
          f'{html.escape(json.dumps(config, indent=2))}</pre></details>')
  path = run.report
  path.write_text(html_page(f'jaxbrain {run_dir.name}', body), encoding='utf-8')
  return path
