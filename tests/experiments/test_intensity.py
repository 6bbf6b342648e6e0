"""experiments.intensity: each patient's channel percentiles over the head."""
import shutil

import numpy as np
from PIL import Image

from experiments import intensity


def test_the_dimmest_scan_comes_first_with_its_own_percentiles(phantom_png, tmp_path, capsys):
  """Catches patients mixed up (a dimmed copy of one patient must come first with its percentiles
  halved) and the background counted in the percentile (the copy's zeros must not pull it down)."""
  source = next(d for d in sorted(phantom_png.iterdir()) if d.is_dir())
  data = tmp_path / 'kaggle_3m'
  bright = shutil.copytree(source, data / source.name)
  dim = shutil.copytree(source, data / source.name.replace('TCGA_PH_', 'TCGA_PD_'))
  for path in dim.iterdir():
    renamed = path.with_name(path.name.replace('TCGA_PH_', 'TCGA_PD_'))
    image = np.asarray(Image.open(path))
    Image.fromarray(image if path.stem.endswith('_mask') else image // 2).save(renamed)
    path.unlink()
  intensity.main(['--data-dir', str(data)])
  rows = [line.split('|')[1:-1] for line in capsys.readouterr().out.strip().splitlines()[2:]]
  (first, *dim_values), (second, *bright_values) = rows[0], rows[1]
  assert first.strip().startswith('TCGA_PD_') and second.strip().startswith('TCGA_PH_')
  bright_expected = [round(p) for p in intensity.head_percentiles(
      np.stack([np.asarray(Image.open(p)) for p in sorted(bright.glob('*.png')) if not p.stem.endswith('_mask')]))]
  assert [int(v) for v in bright_values] == bright_expected
  assert all(abs(int(d) - b / 2) <= 1 for d, b in zip(dim_values, bright_expected))  # halved, up to rounding
