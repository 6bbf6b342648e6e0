"""The clinical table (`data.csv`): codes kept as given, missing kept missing, every malformed cell
and every unmatched patient named."""
import shutil
import warnings

import numpy as np
import pytest

from jaxbrain.data.clinical import COLUMNS, PATIENT, ClinicalTable, read_clinical
from jaxbrain.data.kaggle3m import DataError
from jaxbrain.errors import Caution


def _table(folder, rows):
  """A data.csv in `folder` holding `rows` (patient -> {column: cell}), other cells empty."""
  lines = [','.join((PATIENT, *COLUMNS))]
  lines += [','.join([patient] + [str(cells.get(c, '')) for c in COLUMNS]) for patient, cells in rows.items()]
  (folder / 'data.csv').write_text('\n'.join(lines) + '\n')


def _folders(root, *patients):
  for patient in patients:
    (root / f'{patient}_19960909').mkdir(parents=True)
  return root


def test_codes_are_kept_and_missing_cells_stay_missing(tmp_path):
  """Catches a missing cell read as 0 (or any guess), a code read as a float string, and a column
  lookup that loses the patients' order."""
  root = _folders(tmp_path, 'TCGA_CS_4941', 'TCGA_DU_5855')
  _table(root, {'TCGA_CS_4941': {'RNASeqCluster': 2, 'COCCluster': '3.0', 'age_at_initial_pathologic': 67},
                'TCGA_DU_5855': {'RNASeqCluster': '', 'COCCluster': 1, 'death01': 0}})
  table = read_clinical(root)
  assert table.rows['TCGA_CS_4941']['COCCluster'] == 3 and table.rows['TCGA_DU_5855']['RNASeqCluster'] is None
  assert table.rows['TCGA_DU_5855']['death01'] == 0
  np.testing.assert_array_equal(table.column('RNASeqCluster', ['TCGA_DU_5855', 'TCGA_CS_4941', 'TCGA_XX_0000']),
                                [np.nan, 2.0, np.nan])


@pytest.mark.parametrize('cell, column', [('x', 'RNASeqCluster'), ('2.5', 'COCCluster'), ('0', 'CNCluster'),
                                          ('2', 'death01'), ('150', 'age_at_initial_pathologic')])
def test_a_malformed_cell_is_refused_naming_the_line_and_column(tmp_path, cell, column):
  """Catches a code outside its column's range, or not an integer, read as a value."""
  root = _folders(tmp_path, 'TCGA_CS_4941')
  _table(root, {'TCGA_CS_4941': {column: cell}})
  with pytest.raises(DataError, match=rf'data.csv, line 2: {column} is'):
    read_clinical(root)


def test_a_table_without_its_columns_or_with_a_patient_twice_is_refused(tmp_path):
  """Catches a table read although a column is missing or a patient appears twice."""
  root = _folders(tmp_path, 'TCGA_CS_4941')
  _table(root, {'TCGA_CS_4941': {}})
  text = (root / 'data.csv').read_text()
  (root / 'data.csv').write_text(text.replace(',COCCluster', ',Other'))
  with pytest.raises(DataError, match='lacks the column'):
    read_clinical(root)
  (root / 'data.csv').write_text(text + text.splitlines()[1] + '\n')
  with pytest.raises(DataError, match='line 3: TCGA_CS_4941 has a second row'):
    read_clinical(root)
  shutil.rmtree(root / 'TCGA_CS_4941_19960909')
  (root / 'data.csv').unlink()
  with pytest.raises(DataError, match='data.csv: missing'):
    read_clinical(root)


def test_unmatched_patients_are_named_in_one_warning_each(tmp_path):
  """Catches a folder without a row, or a row without a folder, passed over silently."""
  root = _folders(tmp_path, 'TCGA_CS_4941', 'TCGA_CS_4942')
  _table(root, {'TCGA_CS_4941': {}, 'TCGA_HT_7000': {}})
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    table = read_clinical(root)
  said = [str(w.message) for w in caught if issubclass(w.category, Caution)]
  assert len(said) == 2 and 'TCGA_CS_4942' in said[0] and 'TCGA_HT_7000' in said[1]
  assert isinstance(table, ClinicalTable) and set(table.rows) == {'TCGA_CS_4941', 'TCGA_HT_7000'}


def test_the_shared_table_reads_with_its_patients(real_data):
  """The shared copy: every row matches a patient folder, and the cluster columns hold codes."""
  with warnings.catch_warnings():
    warnings.simplefilter('error', Caution)
    table = read_clinical(real_data)
  assert len(table.rows) == 80
  assert np.nanmax(table.column('COCCluster', list(table.rows))) >= 2
