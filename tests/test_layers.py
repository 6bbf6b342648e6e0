"""Imports flow one way: folders, flags, text -> foundations -> data -> intensity -> postprocess | tumour_type -> decisions -> kernels -> models -> config -> runs
-> bundle -> inference | pages -> train | localize -> evaluators | radiogenomics -> cli | spark (DESIGN.md)."""
import ast
from pathlib import Path

import jaxbrain

LAYERS = (('folders', 'flags', 'text'), ('errors', 'files', 'overlay', 'xla_defaults', 'allocator', 'compilation_cache', 'metrics', 'shape',
                                           'safetensors_io', 'machine'), ('data',), ('intensity',),
          ('postprocess', 'tumour_type'), ('decisions',), ('kernels',), ('models',), ('config',), ('runs',), ('bundle',), ('inference', 'pages'),
          ('train', 'localize'), ('evaluators', 'radiogenomics'), ('cli', 'spark'))
LAYER = {part: i for i, parts in enumerate(LAYERS) for part in parts}
PACKAGE = Path(jaxbrain.__file__).parent


def _part(module: str) -> str | None:
  """'jaxbrain.train.loop' -> 'train'; None outside jaxbrain or for the package itself."""
  pieces = module.split('.')
  return pieces[1] if pieces[0] == 'jaxbrain' and len(pieces) > 1 else None


def imported_parts(path: Path) -> set[str]:
  """The jaxbrain parts a module imports, anywhere in it (function-level imports too)."""
  parts = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      parts |= {_part(alias.name) for alias in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module:
      if node.module == 'jaxbrain':
        parts |= {alias.name for alias in node.names if alias.name in LAYER}
      else:
        parts.add(_part(node.module))
  return parts - {None}


def violations() -> list[str]:
  found = []
  for path in sorted(PACKAGE.rglob('*.py')):
    relative = path.relative_to(PACKAGE)
    if relative == Path('__init__.py'):
      continue
    importer = relative.parts[0].removesuffix('.py')
    for part in imported_parts(path) - {importer}:
      if part not in LAYER or LAYER[part] >= LAYER[importer]:
        found.append(f'{relative} imports jaxbrain.{part}')
  return found


def test_imports_flow_one_way():
  """Catches a module importing a layer above it or a peer (train importing localize, localize
  importing train.config), and a new top-level module nobody placed in a layer."""
  assert violations() == []
  assert {p.name.removesuffix('.py') for p in PACKAGE.iterdir() if not p.name.startswith(('_', '.'))} <= set(LAYER)


def test_the_check_sees_a_violation(tmp_path, monkeypatch):
  """The check itself can fail: a train module importing localize is reported."""
  module = PACKAGE / 'train' / '_layer_probe.py'
  module.write_text('def f():\n  from jaxbrain.localize import gradcam\n')
  try:
    assert violations() == ['train/_layer_probe.py imports jaxbrain.localize']
  finally:
    module.unlink()
