"""The project's text: a README a user can follow (short; its commands run or exist), a
documentation site that builds strictly with an API reference of the public names, and no
reference to the team's internal stretches of work anywhere a reader looks."""
import html
import importlib
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / 'README.md'
API_PACKAGES = ('data', 'models', 'train', 'localize', 'metrics', 'config')

# References to the team's internal stretches of work (a period's number, "this" period's machine, an
# earlier period's figures), not names from the Spark and pytest APIs (SparkSession, a fixture's
# scope). The word is written in two pieces, so that this file holds none of the phrases it finds
# and is scanned like every other file.
PERIOD = 'sess' + 'ion'
WORK_PERIOD = re.compile(
    rf"\b{PERIOD}s?[ -]\d+\b|\b\d+(?:st|nd|rd|th)? {PERIOD}s?\b"
    rf"|\b(?:this|that|earlier|previous|last|next|later|another|each|every|current)\s+(?:work\s+)?{PERIOD}s?(?:'s)?\b"
    rf"|\b{PERIOD}s?(?:'s?)?\s+(?:machine|cpu|run|figures?|fixture)\b|\b(?:the|whole|per|one)\s+{PERIOD}\b"
    r"|\bwork periods?\b", re.I)


def _tracked_text_files() -> list[Path]:
  names = subprocess.run(['git', 'ls-files'], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
  files = []
  for name in names:
    path = ROOT / name
    try:
      files.append((path, path.read_text()))
    except (UnicodeDecodeError, OSError):
      continue  # images and other binary files
  return files


def test_the_work_period_pattern_tells_references_from_api_names():
  """Catches a pattern too loose (flagging SparkSession or a pytest fixture's scope) or too narrow
  (missing the forms the project's text used before: a period's number, "this" period's CPU)."""
  for said in (f'until {PERIOD} 12 the mask loss weighed 1', f"on this {PERIOD}'s CPU", f'in {PERIOD}s 14-17',
               f"the earlier {PERIOD}s' machine", f'{PERIOD.title()} 18, this CPU', f'the {PERIOD}-14 run',
               f'a cache for the {PERIOD}', f'once in the whole {PERIOD}', f'trained once per {PERIOD}',
               f'a {PERIOD} fixture otherwise runs', f"the {PERIOD}'s machine"):
    assert WORK_PERIOD.search(said), said
  for api in (f'Spark{PERIOD.title()}.builder.getOrCreate()', f"@pytest.fixture(scope='{PERIOD}')",
              f'once in the whole test {PERIOD}', f'a Spark {PERIOD} per worker'):
    assert not WORK_PERIOD.search(api), api


def test_no_tracked_file_refers_to_internal_work_periods():
  """Catches text that means nothing to a reader (a default "until" a numbered period, "this"
  period's CPU) in any tracked text file, this one included: README, CHANGELOG, DESIGN, docs,
  code, tests, .ci/run."""
  found = [f'{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}'
           for path, text in _tracked_text_files() for number, line in enumerate(text.splitlines(), 1)
           if WORK_PERIOD.search(line)]
  assert found == []


def test_the_readme_is_short():
  """Catches the README growing back into a laboratory notebook (history belongs in CHANGELOG.md,
  details in docs/)."""
  assert len(README.read_text().splitlines()) <= 250


def _readme_commands() -> list[list[str]]:
  """Every command of the README's fenced bash blocks, split at `&&`, as argument lists."""
  blocks = re.findall(r'```bash\n(.*?)```', README.read_text(), re.S)
  commands = []
  for block in blocks:
    for line in block.replace('\\\n', ' ').splitlines():
      for part in line.split('&&'):
        if part.strip():
          commands.append(shlex.split(part, comments=True))
  return commands


# Commands the README shows that this test does not run: CI itself runs them (`.ci/run` installs
# in a fresh virtualenv and runs the tests; the wheel test trains the demo outside the checkout).
INSTALLING = (('python', '-m', 'venv'), ('.',), ('pip', 'install'), ('python', '-m', 'pytest'))
NEEDS_REAL_DATA = ('DIR', '<', '/path/to', '.nii.gz')
TINY = ['--epochs', '1', '--image-size', '32', '--batch-size', '4', '--bootstrap-samples', '0', '--no-progress',
        '--evals']


def _program(command: list[str]) -> list[str]:
  """The part of a command that names the program: `python -m M` or `jaxbrain SUB`."""
  if command[:2] == ['python', '-m']:
    return [sys.executable, '-m', command[2]]
  assert command[0] == 'jaxbrain', command
  return [sys.executable, '-m', 'jaxbrain.cli', command[1]]


def test_the_readme_commands_run_or_exist(tmp_path):
  """Catches a README command that no longer works: a flag renamed or removed (checked against its
  program's --help), a module or subcommand that does not exist, and the demo command failing
  (run with the smallest settings, on the embedded phantom)."""
  commands = [c for c in _readme_commands() if not any(tuple(c[:len(p)]) == p for p in INSTALLING)]
  assert any(c[:3] == ['python', '-m', 'experiments.exp20'] for c in commands)
  helps = {}
  for command in commands:
    program = _program(command)
    key = tuple(program)
    if key not in helps:
      shown = subprocess.run([*program, '--help'], cwd=ROOT, capture_output=True, text=True)
      assert shown.returncode == 0, f'{" ".join(command)}: --help failed\n{shown.stderr[-2000:]}'
      helps[key] = shown.stdout
    flags = [token.split('=')[0] for token in command if token.startswith('--')]
    missing = [flag for flag in flags if not re.search(rf'(?<![\w-]){re.escape(flag)}(?![\w-])', helps[key])]
    assert missing == [], f'{" ".join(command)}: not in its --help: {missing}'
    if not any(marker in token for token in command for marker in NEEDS_REAL_DATA):
      done = subprocess.run([*program, *command[len(program) - 1:][1:], *TINY, '--workdir', str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True)
      assert done.returncode == 0, f'{" ".join(command)}\n{done.stderr[-3000:]}'


def test_the_documentation_builds_strictly_with_every_public_name(tmp_path):
  """Catches a broken link or reference in docs/ (`mkdocs build --strict` fails on it) and an API
  page that leaves out a name of its package's `__all__` (a name added to the package without
  documentation, or a page pointing at the wrong module), and the build skipped under CI (the only
  build of the site CI makes) because mkdocs is missing."""
  if importlib.util.find_spec('mkdocs') is None:
    assert not os.environ.get('CI'), 'CI builds the documentation here (.ci/run installs the docs extra)'
    pytest.skip('the docs extra: pip install -e ".[docs]"')
  built = subprocess.run([sys.executable, '-m', 'mkdocs', 'build', '--strict', '--site-dir', str(tmp_path / 'site')],
                         cwd=ROOT, capture_output=True, text=True, env={**os.environ, 'NO_MKDOCS_2_WARNING': '1'})
  assert built.returncode == 0, [line for line in built.stderr.splitlines() if 'WARNING' in line or 'Error' in line]
  for name in API_PACKAGES:
    module = importlib.import_module(f'jaxbrain.{name}')
    page = (tmp_path / 'site' / 'api' / name / 'index.html').read_text()
    documented = set(re.findall(r'id="jaxbrain\.[\w.]*?\.?(\w+)"', page))
    assert [n for n in module.__all__ if n not in documented] == [], name
  signatures = [html.unescape(re.sub('<[^>]+>', '', s)) for s in re.findall(
      r'<div class="doc-signature[^"]*"[^>]*>(.*?)</div>', (tmp_path / 'site' / 'api' / 'localize' / 'index.html')
      .read_text(), re.S)]
  assert signatures and max(len(line) for s in signatures for line in s.splitlines()) <= 100, \
      'API signatures on one long line (behind a scroll bar): the docs extra formats them with ruff'


def _bullets(text: str) -> list[tuple[int, int]]:
  """(first line, number of lines) of each list item of a Markdown text: a line starting with "- "
  (at any indent) and the lines indented under it that start no item of their own."""
  items, lines = [], text.splitlines()
  for number, line in enumerate(lines):
    stripped = line.lstrip()
    if stripped.startswith('- '):
      indent, length = len(line) - len(stripped), 1
      for following in lines[number + 1:]:
        if not following.strip() or following.lstrip().startswith('- ') or \
            len(following) - len(following.lstrip()) <= indent:
          break
        length += 1
      items.append((number + 1, length))
  return items


def test_no_bullet_in_the_docs_is_a_wall_of_text():
  """Catches a list item grown into a paragraph of more than ten lines (docs/predict.md's
  `predictions.csv` bullet had fourteen), which readers skip; break it into sub-points."""
  long = [f'{path.relative_to(ROOT)}:{line} ({length} lines)' for path in sorted((ROOT / 'docs').glob('*.md'))
          for line, length in _bullets(path.read_text(encoding='utf-8')) if length > 10]
  assert long == []
