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
