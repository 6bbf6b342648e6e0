"""report.html pages without a browser: self-contained, escaped, and showing the run's own numbers
(the browser behaviour is tests/localize/test_report_browser.py)."""
import html
import json
import re

from jaxbrain.pages import write_prediction_page, write_run_page


def _references(page: str) -> list[str]:
  return re.findall(r'(?:src|href)="([^"]*)"', page)


def test_prediction_report_is_self_contained_and_escapes_names(tmp_path):
  """Catches: a page that loads anything from a network or an absolute path (breaks when the folder
  moves or is opened offline), and a patient name that closes the data <script> or injects HTML."""
  hostile = '</script><b>x</b>'
  slices = [{'slice': k, 'image': f'overlays/a_{k}_overlay.png', 'probability': p, 'label': int(p >= 0.5)}
            for k, p in ((1, 0.1), (2, 0.9))]
  page = write_prediction_page(tmp_path, {hostile: slices}, {hostile: {'slices': 2, 'slices_with_tumor': [2]}},
                                 [{'role': 'classifier', 'run': 'runs/a', 'experiment': 'exp21', 'checkpoint': 'best/9'}],
                                 0.5, f'Label: probability >= 0.5 {hostile}').read_text()
  assert all(not ref.startswith(('/', 'http:', 'https:', '//', 'file:')) for ref in _references(page))
  assert '<b>x</b>' not in page.split('<script type="application/json"')[0]
  embedded = re.search(r'<script type="application/json" id="slices">(.*?)</script>', page, re.S).group(1)
  assert json.loads(embedded) == {'patients': [{'name': hostile, 'slices': slices}]}
  assert 'value="1"' in page  # opens on the likeliest tumor slice


def test_run_report_shows_test_metrics_with_intervals_and_only_existing_figures(tmp_path):
  """Catches: test metrics shown without their intervals, validation figures passed off as test
  figures, and <img> tags for plots the run never wrote."""
  (tmp_path / 'config.json').write_text(json.dumps({'config': {'experiment': 'exp21'}}))
  test = {'accuracy': 0.887, 'roc_auc': 0.952, 'confidence_95': {'accuracy': [0.826, 0.947]}}
  (tmp_path / 'metrics.json').write_text(json.dumps({
      'experiment': 'exp21', 'test': test, 'validation': {'accuracy': 0.905},
      'selected_checkpoint': {'epoch': 8, 'metric': 'validation roc_auc', 'value': 0.961},
      'counts': {'test_patients': 12, 'test_slices': 444}}))
  (tmp_path / 'roc.png').write_bytes(b'')
  page = write_run_page(tmp_path).read_text()
  tested, validated = page.split('Validation patients')
  assert '0.887 [0.826, 0.947]' in tested and '0.952' in tested and '0.905' in validated
  assert 'epoch 8' in validated
  assert _references(page) == ['roc.png']


def test_run_report_says_why_a_run_has_no_intervals(tmp_path):
  """Catches: the page announcing '95% patient-bootstrap intervals in brackets' under a table that
  has none (fewer than 5 test patients, or --bootstrap-samples 0) instead of saying why."""
  note = 'not meaningful: 2 patients (a patient bootstrap needs >= 5)'
  (tmp_path / 'metrics.json').write_text(json.dumps({
      'experiment': 'exp20', 'test': {'accuracy': 0.75, 'confidence_95': None, 'confidence_95_note': note},
      'validation': {'accuracy': 0.7}}))
  tested = write_run_page(tmp_path).read_text().split('Validation patients')[0]
  assert 'intervals in brackets' not in tested
  assert f'No 95% intervals: {html.escape(note)}' in tested
