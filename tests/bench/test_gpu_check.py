"""bench/gpu_check.py: stages within one budget, every stage reported as it ended."""
import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _module():
  spec = importlib.util.spec_from_file_location('gpu_check', ROOT / 'bench' / 'gpu_check.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_stages_share_the_budget_and_report_how_they_ended(tmp_path, monkeypatch):
  """Four stand-in stages under a 12 s budget: a quick one with a JSON result, one that outlives
  its share (cut off), one left no time, one that fails. Catches a stage allowed past its limit
  (the budget overrun), time an early stage saved not passed on, a cut-off or failed stage reported
  as done, and a result file not carried into gpu_check.json."""
  check = _module()
  python = sys.executable
  result = tmp_path / 'quick.json'
  planned = [('end_to_end', [python, '-c', f'open({str(result)!r}, "w").write("{{\\"x\\": 1}}")'], result),
             ('exp20_cold', [python, '-c', 'import time; time.sleep(60)'], None),
             ('exp20_warm', [python, '-c', 'import time; time.sleep(60)'], None),
             ('bfloat16', [python, '-c', 'raise SystemExit(3)'], None)]
  monkeypatch.setattr(check, 'stages', lambda *args: planned)
  monkeypatch.setattr(check, 'SHARES', {'end_to_end': 0.25, 'exp20': 0.5, 'bfloat16': 0.25})
  monkeypatch.setattr(check, 'MIN_STAGE_S', 1)
  assert check.main(['--data-dir', str(tmp_path), '--budget-s', '12', '--out', str(tmp_path / 'out')]) == 0
  report = json.loads((tmp_path / 'out' / 'gpu_check.json').read_text())['stages']
  assert report['end_to_end']['status'] == 0 and report['end_to_end']['result'] == {'x': 1}
  # the quick stage's unused time is shared on: exp20_cold gets 1/3 of the ~12 s left, not 1/4 of 12
  assert report['exp20_cold']['status'] == 'cut off by its limit' and report['exp20_cold']['limit_s'] >= 3.5
  assert report['exp20_warm']['status'] == 'cut off by its limit'
  assert report['bfloat16']['status'] in (3, 'not run: the budget was spent')
  assert sum(stage.get('seconds', 0) for stage in report.values()) <= 13
