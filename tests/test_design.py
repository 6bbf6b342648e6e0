"""DESIGN.md describes the package as it is."""
import re
from pathlib import Path

import jaxbrain

PACKAGE = Path(jaxbrain.__file__).parent
DESIGN = PACKAGE.parent / 'DESIGN.md'


def listed_modules(text: str) -> set[str]:
  """The module paths in the first column of DESIGN.md's module table (`| \\`train/fit.py\\` | ... |`)."""
  return set(re.findall(r'^\| `([\w/]+\.py)` \|', text, re.MULTILINE))


def test_the_module_table_lists_exactly_the_packages_modules():
  """Catches a module added, moved or removed without DESIGN.md saying so (a newcomer's map that
  lists modules that no longer exist, or misses the ones that do)."""
  actual = {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob('*.py')}
  assert listed_modules(DESIGN.read_text()) == actual


def test_the_table_reader_sees_rows():
  """The check itself can fail: a table row is read, prose mentioning a module is not."""
  assert listed_modules('| `train/fit.py` | the epochs |\nsee `train/loop.py` |\n') == {'train/fit.py'}


MAX_FUNCTION_LINES = 60


def long_functions(package: Path = PACKAGE, limit: int = MAX_FUNCTION_LINES) -> list[str]:
  """'path:name (lines)' of every function or method of `package` longer than `limit` lines."""
  import ast

  found = []
  for path in sorted(package.rglob('*.py')):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > limit:
        found.append(f'{path.relative_to(package)}:{node.name} ({node.end_lineno - node.lineno + 1})')
  return found


def test_no_function_is_longer_than_sixty_lines():
  """Catches a function grown past what a reader holds at once (the fit loop had reached 100 lines,
  the runner 94, with state shared through closures)."""
  assert long_functions() == []


def test_the_length_check_sees_a_long_function(tmp_path):
  """The check itself can fail: a 61-line function is reported, a 60-line one is not."""
  body = ''.join(f'  x{k} = {k}\n' for k in range(59))
  (tmp_path / 'm.py').write_text(f'def short():\n{body}\ndef long():\n{body}  y = 0\n')
  assert long_functions(tmp_path) == ['m.py:long (61)']
