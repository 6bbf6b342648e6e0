"""Running a command the tests need to succeed."""
import subprocess
from pathlib import Path


def succeeds(command: list, cwd: Path, env: dict | None = None) -> str:
  """Runs `command` in `cwd`; fails the test with the command and the end of its output unless it
  exits 0; returns its standard output."""
  done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
  assert done.returncode == 0, f'{" ".join(map(str, command))}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}'
  return done.stdout
