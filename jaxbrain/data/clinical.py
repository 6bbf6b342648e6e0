"""The LGG dataset's clinical table: `data.csv` beside the patient folders, one row per patient with
its genomic clusters, histological type and grade, tumour site, laterality and location, sex, age,
race, ethnicity and vital status, read and checked.

Every cell is kept as the integer code the table gives, or None where it is empty: a missing value
stays missing, nothing is imputed. The dataset's README says only that the table holds "tumor
genomic clusters and patient data" and gives no legend for the codes, so this module states none:
the codes are the table's. The dataset's authors (Buda et al. 2019; Mazurowski et al. 2017, J
Neurooncol) describe the clusters as previously identified genomic subtypes of these TCGA patients
(IDH mutation and 1p/19q co-deletion, DNA methylation, gene expression, DNA copy number, microRNA
expression), without a legend of the numbers. What is checked: the columns are all there, each patient appears
once, every code is an integer in its column's range (`RANGES`), and the rows match the image
folders (a patient without a row, or a row without a patient folder, is named in one warning).
"""
from __future__ import annotations

import csv
import dataclasses
import re
import warnings
from pathlib import Path

import numpy as np

from jaxbrain.data.kaggle3m import DataError
from jaxbrain.errors import Caution

FILE = 'data.csv'
PATIENT = 'Patient'
GENOMIC_CLUSTERS = ('RNASeqCluster', 'MethylationCluster', 'miRNACluster', 'CNCluster', 'RPPACluster',
                    'OncosignCluster', 'COCCluster')
COLUMNS = (*GENOMIC_CLUSTERS, 'histological_type', 'neoplasm_histologic_grade', 'tumor_tissue_site', 'laterality',
           'tumor_location', 'gender', 'age_at_initial_pathologic', 'race', 'ethnicity', 'death01')
CODE_RANGE = (1, 9)  # a category code: a small positive integer
RANGES = {'age_at_initial_pathologic': (0, 120), 'death01': (0, 1)}  # years; a 0/1 flag (its name: death)
PATIENT_ID = re.compile(r'TCGA_[A-Z0-9]{2}_[A-Z0-9]{4}')


@dataclasses.dataclass(frozen=True)
class ClinicalTable:
  """`rows`: patient id ('TCGA_CS_4941') -> {column: integer code, or None where the cell is empty}."""
  path: Path
  rows: dict

  def column(self, name: str, patients) -> np.ndarray:
    """`name`'s codes for `patients` as floats, NaN where missing (or the patient has no row)."""
    if name not in COLUMNS:
      raise KeyError(f'{name}: not a column of {FILE} ({", ".join(COLUMNS)})')
    values = [self.rows.get(patient, {}).get(name) for patient in patients]
    return np.array([np.nan if v is None else float(v) for v in values])


def _code(path: Path, line: int, column: str, cell: str) -> int | None:
  """A cell's integer code, None when empty; anything else is a `DataError` naming the cell."""
  cell = cell.strip()
  if not cell:
    return None
  try:
    number = float(cell)
  except ValueError:
    number = float('nan')
  low, high = RANGES.get(column, CODE_RANGE)
  if not number.is_integer() or not low <= number <= high:
    raise DataError(f'{path}, line {line}: {column} is {cell!r}, not an integer code from {low} to {high}')
  return int(number)


def read_clinical(data_dir: str | Path) -> ClinicalTable:
  """The clinical table of the kaggle_3m folder `data_dir`, checked (module docstring); a patient
  folder without a row, or a row without a folder, is named in one `Caution` warning each."""
  path = Path(data_dir) / FILE
  if not path.is_file():
    raise DataError(f'{path}: missing; the Kaggle download holds it beside the patient folders')
  with open(path, newline='', encoding='utf-8-sig') as f:
    reader = csv.DictReader(f)
    missing = [c for c in (PATIENT, *COLUMNS) if c not in (reader.fieldnames or [])]
    if missing:
      raise DataError(f'{path}: lacks the column(s) {", ".join(missing)}')
    rows = {}
    for line, record in enumerate(reader, start=2):
      patient = (record[PATIENT] or '').strip()
      if not PATIENT_ID.fullmatch(patient):
        raise DataError(f'{path}, line {line}: {patient!r} is not a patient id like TCGA_CS_4941')
      if patient in rows:
        raise DataError(f'{path}, line {line}: {patient} has a second row')
      rows[patient] = {column: _code(path, line, column, record[column] or '') for column in COLUMNS}
  _warn_unmatched(path, rows, _patient_folders(Path(data_dir)))
  return ClinicalTable(path, rows)


def _patient_folders(data_dir: Path) -> set[str]:
  """The patient ids of the image folders (TCGA_CS_4941_19960909 -> TCGA_CS_4941)."""
  return {d.name.rsplit('_', 1)[0] for d in data_dir.iterdir() if d.is_dir() and PATIENT_ID.match(d.name)}


def _warn_unmatched(path: Path, rows: dict, folders: set[str]) -> None:
  for names, what in ((sorted(folders - set(rows)), 'patient folder(s) without a row'),
                      (sorted(set(rows) - folders), 'row(s) without a patient folder')):
    if names:
      shown = ', '.join(names[:5]) + (f' and {len(names) - 5} more' if len(names) > 5 else '')
      warnings.warn(f'{path}: {len(names)} {what}: {shown}; their clinical values are missing, not guessed',
                    Caution, stacklevel=3)
