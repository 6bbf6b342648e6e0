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
from jaxbrain.text import counted

STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:960px;padding:12px;color:#1d1d1f}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:2px 10px 2px 0;text-align:left;overflow-wrap:anywhere}
th{font-weight:600}.num{font-variant-numeric:tabular-nums}.muted{color:#666}
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
"""

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


def _page(title: str, body: str, script: str = '') -> str:
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
  """SVG: tumor probability (and tumor area, scaled to its maximum) against slice order, the
  decision threshold dashed, and a cursor the viewer moves to the shown slice."""
  width, height, pad = 300.0, 90.0, 6.0
  dx = (width - 2 * pad) / max(len(slices) - 1, 1)
  y = lambda v: height - pad - v * (height - 2 * pad)  # noqa: E731
  points = ' '.join(f'{pad + i * dx:.1f},{y(s["probability"]):.1f}' for i, s in enumerate(slices))
  parts = [f'<polyline points="{points}" fill="none" stroke="#c0392b" stroke-width="1.5"/>',
           f'<line x1="{pad}" x2="{width - pad}" y1="{y(threshold):.1f}" y2="{y(threshold):.1f}" '
           'stroke="#999" stroke-dasharray="3 3"/>']
  legend = 'red: tumor probability; dashed: decision threshold'
  if 'tumor_pixels' in slices[0]:
    most = max(s['tumor_pixels'] for s in slices) or 1
    area = ' '.join(f'{pad + i * dx:.1f},{y(s["tumor_pixels"] / most):.1f}' for i, s in enumerate(slices))
    parts.append(f'<polyline points="{area}" fill="none" stroke="#2c7fb8" stroke-width="1.5"/>')
    legend += f'; blue: tumor area (max {most} px)'
  parts.append(f'<line class="cursor" data-x0="{pad}" data-dx="{dx:.4f}" x1="{pad}" x2="{pad}" y1="0" '
               f'y2="{height}" stroke="#333"/>')
  return (f'<svg class="plot" viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-label="{legend}">'
          + ''.join(parts) + f'</svg><div class="muted">{legend}; x: slices in order</div>')


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
    total = totals[name]
    facts = f'{counted(total["slices"], "slice")}, {len(total["slices_with_tumor"])} predicted with tumor'
    if 'volume_voxels' in total:
      facts += f', predicted tumor {total["volume_voxels"]} pixels in all'
    if 'tumor_volume_ml' in total:
      facts += f' ({total["tumor_volume_ml"]:.2f} ml)'
    if 'max_disagreement' in total:
      disputed = total.get('slices_where_members_disagree', [])
      facts += (f'; the ensemble\'s members disagree on the label of {len(disputed)} slice{"s" * (len(disputed) != 1)}'
                + (f' ({", ".join(map(str, disputed))})' if disputed else '')
                + f', largest spread of their probabilities {total["max_disagreement"]:.2f}')
    sections.append(
        f'<section class="patient" data-patient="{index}"><h2>{html.escape(name)}</h2><p>{facts}</p>'
        f'<div class="viewer"><div class="frame"><img alt=""><div class="caption"></div></div>'
        f'<input type="range" min="0" max="{len(slices) - 1}" value="{start}" '
        f'aria-label="slice of {html.escape(name)}"></div>{_probability_plot(slices, threshold)}</section>')
  run_rows = ''.join(f'<tr><td>{html.escape(r["role"])}</td><td>{html.escape(str(r["run"]))}</td>'
                     f'<td>{html.escape(str(r.get("experiment", "")))}</td>'
                     f'<td>{html.escape(str(r.get("checkpoint", "")))}</td></tr>' for r in runs)
  warned = ''.join(f'<li>{html.escape(w)}</li>' for w in dict.fromkeys(warnings))
  body = (f'<h1>jaxbrain predict: {len(names)} patient{"s" * (len(names) != 1)}</h1>'
          f'<p class="muted">Drag a slider or use the arrow keys on it. Overlays: '
          + ('the predicted mask in red.' if any('tumor_pixels' in s[0] for s in patients.values()) else
             'Grad-CAM of the classifier (where it looked), red to yellow.')
          + f' {html.escape(how)}</p>'
          f'<table><tr><th>role</th><th>run</th><th>experiment</th><th>checkpoint</th></tr>{run_rows}</table>'
          + (f'<div class="warnings"><h2>Warnings</h2><ul>{warned}</ul></div>' if warned else '')
          + ''.join(sections)
          + f'<script type="application/json" id="slices">'
          f'{_inline_json({"patients": [{"name": n, "slices": patients[n]} for n in names]})}</script>')
  path = PredictionDir(out_dir).report
  path.write_text(_page('jaxbrain predict', body, VIEWER_SCRIPT), encoding='utf-8')
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
                                       f'validation: {html.escape(json.dumps(decision.get("mask_rule")))}'))
                   if isinstance(test.get(key), dict))
  figures = ''.join(f'<img src="{name}" alt="{name}"{" class=wide" * (name == "curves.png")}>'
                    for name in RunDir.PLOTS if run.plot(name).is_file())
  shown = [p for folder in (run.overlays, run.gradcam) for p in sorted(folder.glob('*.png'))][:8]
  gallery = ''.join(f'<img src="{p.relative_to(run_dir).as_posix()}" alt="{html.escape(p.stem)}" loading="lazy">'
                    for p in shown)
  body = (f'<h1>{html.escape(final.get("experiment", run_dir.parent.name))}: {html.escape(run_dir.name)}</h1>'
          f'<p>{html.escape(final.get("model", ""))}<br>init: {html.escape(str(final.get("init", "")))}<br>'
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
          f' ({_number(selected.get("value", float("nan")))}).</p>'
          + (f'<h2>Curves and test plots</h2><div class="figures">{figures}</div>' if figures else '')
          + (f'<h2>Test overlays</h2><div class="gallery">{gallery}</div>' if gallery else '')
          + f'<h2>Config</h2><details><summary>config.json</summary><pre>'
          f'{html.escape(json.dumps(config, indent=2))}</pre></details>')
  path = run.report
  path.write_text(_page(f'jaxbrain {run_dir.name}', body), encoding='utf-8')
  return path
