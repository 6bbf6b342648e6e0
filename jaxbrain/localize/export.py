"""`jaxbrain export RUN --out DIR`: a run or an ensemble as a model bundle that `predict` takes alone.

The bundle holds each member's selected weights as safetensors (the variables its figures were
measured with: no optimizer state, no orbax), `model.json` with everything `predict` needs and
nothing it must guess (task, architecture and parameter count, inputs, decisions, members, data
fingerprint, split, recipe, test figures with their intervals, wall time, machine, the versions
that made it), `MODEL_CARD.md` made from it, `LICENSE` for the weights and `SHA256SUMS` of every
file (`sha256sum -c SHA256SUMS` checks it; `bundle.verify` checks it before every use). A
segmenter's own detector (`jaxbrain gate --seg-run RUN` alone) goes with it, with the test figures
that gate measured. The folder is written under a temporary name and renamed: an interruption
leaves nothing half-made.
"""
from __future__ import annotations

from pathlib import Path

import flax
import jax
import numpy as np

from jaxbrain import __version__, safetensors_io
from jaxbrain.bundle import FORMAT, RESEARCH_ONLY, identity, load_bundle, write_checksums
from jaxbrain.decisions import Detector
from jaxbrain.errors import OutputExistsError
from jaxbrain.files import staged_folder, write_json
from jaxbrain.folders import BundleDir, RunDir
from jaxbrain.runs import LoadedRun, RunError, load_run, read_config, read_json, read_split, task_of
from jaxbrain.text import counted

WEIGHTS_LICENCE = {'name': 'CC BY-NC-SA 4.0', 'url': 'https://creativecommons.org/licenses/by-nc-sa/4.0/'}
CITATIONS = (
    'M. Buda, A. Saha, M. A. Mazurowski, "Association of genomic subtypes of lower-grade gliomas with shape features '
    'automatically extracted by a deep learning algorithm", Computers in Biology and Medicine 109 (2019) 218-225, '
    'doi:10.1016/j.compbiomed.2019.05.002 (the LGG segmentation dataset, Kaggle mateuszbuda/lgg-mri-segmentation)',
    'N. Pedano et al., "Radiology Data from The Cancer Genome Atlas Low Grade Glioma [TCGA-LGG] collection", The Cancer '
    'Imaging Archive (2016), doi:10.7937/K9/TCIA.2016.L4LTD3TK',
    'K. Clark et al., "The Cancer Imaging Archive (TCIA): maintaining and operating a public information repository", '
    'Journal of Digital Imaging 26(6) (2013) 1045-1057, doi:10.1007/s10278-013-9622-7',
)
OUT_OF_SCOPE = (
    'tumours other than adult lower-grade gliomas (glioblastoma, metastases, meningioma, paediatric tumours)',
    'paediatric scans',
    'sequences other than pre-contrast T1, FLAIR and post-contrast T1 in that channel order, and CT',
    'slices other than axial, and scans not skull-stripped or not registered as the training data',
    'any clinical decision: it is not a medical device',
)
CHANNELS = ('pre-contrast T1', 'FLAIR', 'post-contrast T1')
WEIGHTS_DTYPES = ('float32', 'float16')


def _member_facts(run: LoadedRun, source: str | None) -> dict:
  """A member's recipe, wall time and machine, from its folder or the run it was copied from."""
  folders = [run.directory, *([Path(source)] if source else [])]
  header = read_config(run.directory)[1]
  timing = next((read_json(RunDir(f).final_metrics).get('timing', {}) for f in folders
                 if RunDir(f).final_metrics.is_file()), {})
  return {'command': header.get('command'), 'machine': header.get('machine', 'not recorded by the run'),
          'wall_time_s': timing.get('seconds')}


def _parameters(variables: dict) -> dict:
  counts = {kind: int(sum(np.size(leaf) for leaf in jax.tree.leaves(variables.get(kind, {}))))
            for kind in ('params', 'batch_stats')}
  return {'parameters': counts['params'], 'batch_norm_statistics': counts['batch_stats']}


def _test_figures(run_dir: Path) -> dict | None:
  """What the run measured on its test patients: a segmenter's own detector's gate record (masks
  and detection, with intervals), else a single run's metrics.json."""
  run = RunDir(run_dir)
  if run.own_detector.is_file():
    record = read_json(run.own_detector)
    return {'measured_by': 'jaxbrain gate --seg-run RUN --data-dir DIR (gates/segmenter-alone.json)',
            'patients': record['test_patients'], **record['test']}
  if run.final_metrics.is_file():
    metrics = read_json(run.final_metrics)
    return {'measured_by': 'the training run (metrics.json)', 'patients': metrics.get('counts', {}).get('test_patients'),
            'test': metrics.get('test')}
  return None


def _recipe(facts: list[dict], stated: str | None) -> dict:
  """How the members were trained: the commands their runs recorded, else what the exporter
  states (`--recipe`), said which; never left blank without saying so."""
  if all(f['command'] for f in facts):
    return {'command': '; '.join(sorted({f['command'] for f in facts})), 'source': 'recorded by the runs'}
  if stated:
    return {'command': stated, 'source': 'stated at export (the runs did not record their command)'}
  return {'command': None, 'source': 'not recorded by the runs (jaxbrain export --recipe states it)'}


def model_record(run: LoadedRun, name: str, version: str, recipe: str | None = None) -> dict:
  """model.json of `run` (a run or an ensemble), its members' weights named weights/member<k>;
  `recipe`: the command that trained the members, where their runs did not record it."""
  members = run.members or (run,)
  header = read_config(members[0].directory)[1]
  split = read_split(run.directory)
  sources = read_json(RunDir(run.directory).ensemble).get('sources', []) if run.members else []
  facts = [_member_facts(member, sources[k] if k < len(sources) else None) for k, member in enumerate(members)]
  task = run.config.task
  decision = read_json(RunDir(run.directory).decision)
  own = RunDir(run.directory).own_detector
  return {
      'format': FORMAT, 'name': name, 'version': version, 'task': run.config.task.name,
      'intended_use': RESEARCH_ONLY, 'out_of_scope': list(OUT_OF_SCOPE),
      'architecture': {'description': run.config.describe(), 'model': header['config']['model'],
                       **_parameters(run.variables)},
      'inputs': {'channels': list(CHANNELS), 'native_size': 256, 'image_size': run.config.data.image_size,
                 'preprocessing': run.config.data.preprocess, 'context_slices': getattr(task, 'context_slices', 0),
                 'one_intensity_scale_per_patient': getattr(task, 'scale_volumes', False),
                 'intensity': 'uint8 slices as in the Kaggle kaggle_3m files; NIfTI and DICOM volumes are scaled to them'},
      'decisions': {'decision': decision, 'detector': read_json(own)['detector'] if own.is_file() else None,
                    'detector_chosen_on': read_json(own)['detector_chosen_on'] if own.is_file() else None},
      'members': [{'weights': f'weights/member{k}.safetensors', 'source': str(member.directory),
                   'checkpoint': RunDir(member.directory).checkpoint_name(member.checkpoint), **fact}
                  for k, (member, fact) in enumerate(zip(members, facts))],
      'data': {'name': header.get('data'), 'fingerprint': split.get('data_fingerprint'), 'phantom_only': run.phantom_only,
               'split': {k: split.get(k) for k in ('kind', 'seed', 'fold', 'note') if k in split},
               'patients': {side: split.get(side, []) for side in ('train', 'validation', 'test')}},
      'recipe': _recipe(facts, recipe),
      'test': _test_figures(run.directory),
      'made_with': {'jaxbrain': __version__, 'jax': jax.__version__, 'flax': flax.__version__, 'numpy': np.__version__},
      'config': header,
      'licence': {'weights': WEIGHTS_LICENCE['name'], 'weights_url': WEIGHTS_LICENCE['url'], 'code': 'Apache-2.0'},
      'citations': list(CITATIONS),
  }


def export(run_dir: str | Path, out_dir: str | Path, name: str, version: str, weights_dtype: str = 'float32',
           recipe: str | None = None) -> dict:
  """Writes the bundle of the finished run or ensemble `run_dir` to `out_dir` (new or empty) and
  loads it back (`bundle.load_bundle`) before renaming it into place; returns its model.json.
  `weights_dtype` 'float16' stores the parameters in half the bytes (`stored_weights`; loaded back
  as float32): ship it only where the decision set shows the same labels and masks as float32.
  `recipe` states the training command where the runs did not record it (`model_record`)."""
  if weights_dtype not in WEIGHTS_DTYPES:
    raise ValueError(f'{weights_dtype}: not one of {", ".join(WEIGHTS_DTYPES)}')
  out_dir = Path(out_dir)
  if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
    raise OutputExistsError(f'{out_dir}: exists and is not an empty folder; choose a new --out')
  task = task_of(run_dir)
  run = load_run(run_dir, task)
  record = {**model_record(run, name, version, recipe), 'weights_dtype': weights_dtype}
  with staged_folder(out_dir) as staging:
    folder = BundleDir(staging)
    folder.weights.mkdir()
    for k, member in enumerate(run.members or (run,)):
      safetensors_io.write(folder.member_weights(k), stored_weights(member, weights_dtype),
                           {'format': 'jaxbrain', 'name': name, 'version': version, 'member': str(k)})
    write_json(folder.model, record)
    folder.licence.write_text(licence_text(record), encoding='utf-8')
    folder.card.write_text(model_card(record), encoding='utf-8')
    write_checksums(folder)
    load_bundle(staging, task)  # what was written reads back, checked
  return {**record, 'sha256': identity(BundleDir(out_dir)), 'out': str(out_dir)}


def stored_weights(member: LoadedRun, weights_dtype: str) -> dict:
  """A member's variables as the bundle stores them, flat: the parameters in `weights_dtype`, the
  BatchNorm statistics always in float32 (running variances reach beyond float16's 65504). A
  parameter that float16 cannot hold is refused, naming it."""
  stored = {}
  for name, leaf in safetensors_io.flatten(jax.tree.map(np.asarray, member.variables)).items():
    value = leaf.astype(weights_dtype if name.startswith('params/') else 'float32')
    if not np.isfinite(value).all():
      raise RunError(f'{member.directory}: {name} exceeds {weights_dtype}\'s range (largest magnitude '
                     f'{np.abs(leaf).max():g}); export it as float32')
    stored[name] = value
  return stored


def licence_text(record: dict) -> str:
  licence = record['licence']
  return (f'The weights in this folder (weights/*.safetensors) are licensed under {licence["weights"]}\n'
          f'({licence["weights_url"]}).\n\n'
          'They were trained on the LGG Segmentation Dataset (Buda, Saha, Mazurowski; Kaggle\n'
          'mateuszbuda/lgg-mri-segmentation), derived from the TCGA-LGG collection of The Cancer Imaging\n'
          'Archive, whose data usage policy requires that every use acknowledge the collection and TCIA.\n'
          'The weights carry the licence of the data they were made from: attribution, non-commercial use,\n'
          'derived works shared alike. Attribute them by citing:\n\n'
          + ''.join(f'- {c}\n' for c in record['citations'])
          + f'\n{RESEARCH_ONLY[0].upper()}{RESEARCH_ONLY[1:]}.\n\n'
          f'The jaxbrain code that reads them is licensed separately, under {licence["code"]}.\n')


def _figures_lines(test: dict | None) -> list[str]:
  """The card's test figures: each with its 95% interval where one was computed."""
  if not test:
    return ['Not measured before export (jaxbrain gate --seg-run RUN --data-dir DIR measures a segmenter).']
  lines = [f'Measured by {test["measured_by"]} on {test["patients"]} test patients, used for no choice:', '']
  for part in ('segmenter', 'test'):
    if isinstance(test.get(part), dict):
      lines += _metric_lines(part if part == 'segmenter' else 'run', test[part])
  for name, scores in (test.get('detection') or {}).items():
    lines += _metric_lines(f'slice detection, {name.replace("_", " ")}', scores)
  return lines


def _metric_lines(title: str, metrics: dict) -> list[str]:
  bounds = metrics.get('confidence_95') or {}
  cells = [f'{k} {v:.3f}' + (' [{:.3f}, {:.3f}]'.format(*bounds[k]) if k in bounds else '')
           for k, v in metrics.items() if isinstance(v, float)]
  return [f'- {title}: ' + ', '.join(cells)]


def model_card(record: dict) -> str:
  """MODEL_CARD.md, made from model.json alone."""
  arch, inputs, data = record['architecture'], record['inputs'], record['data']
  decisions = record['decisions']
  rule = (decisions['decision'].get('mask_rule') or {})
  detector = decisions.get('detector')
  members = record['members']
  phantom = ('\n**Trained on synthetic phantoms only: it has never seen a real scan; its outputs mean nothing for '
             'real patients.**\n' if data.get('phantom_only') else '')
  lines = [
      f'# {record["name"]} {record["version"]}', phantom,
      f'{record["task"]} model made by jaxbrain {record["made_with"]["jaxbrain"]}: {arch["description"]}; '
      f'{counted(len(members), "member")} of {arch["parameters"]:,} parameters and {arch["batch_norm_statistics"]:,} '
      f'BatchNorm statistics each, stored as {record.get("weights_dtype", "float32")}'
      + (', their probabilities averaged.' if len(members) > 1 else '.'), '',
      '## Intended use', '', f'{RESEARCH_ONLY[0].upper()}{RESEARCH_ONLY[1:]}. Out of scope:', '',
      *[f'- {item}' for item in record['out_of_scope']], '',
      '## Inputs', '',
      f'Axial brain MRI slices of {inputs["native_size"]}x{inputs["native_size"]} pixels with three channels '
      f'({", ".join(inputs["channels"])}), resized to {inputs["image_size"]} for the model, each seen with '
      f'{inputs["context_slices"]} neighbouring slice(s) on either side'
      + (', each patient\'s scan on one intensity scale' if inputs['one_intensity_scale_per_patient'] else '')
      + f'. {inputs["intensity"]}.', '',
      '## Decisions', '',
      f'- Masks: pixel probability > {rule.get("threshold")}, components of at least {rule.get("min_pixels")} pixels'
      + (', single-slice components dropped' if rule.get('drop_single_slice') else '')
      + (', flip-averaged' if rule.get('flip_average') else '') + f' (chosen on {decisions["decision"].get("mask_rule_chosen_on")}).'
      if rule else f'- Label threshold {decisions["decision"]["threshold"]} ({decisions["decision"]["threshold_chosen_on"]}).',
      *([f'- Is there a tumour: {Detector.from_json(detector).in_words()} (chosen on {decisions["detector_chosen_on"]}).']
        if detector else []), '',
      '## Training data', '',
      f'{data["name"]} (content fingerprint {data["fingerprint"]}); {data["split"].get("kind")} split, seed '
      f'{data["split"].get("seed")}; '
      f'{len(data["patients"]["train"])} training, {len(data["patients"]["validation"])} validation (decision set), '
      f'{len(data["patients"]["test"])} test patients (listed in model.json). Recipe: '
      + (f'`{record["recipe"]["command"]}`; {record["recipe"]["source"]}.' if record['recipe']['command']
         else f'{record["recipe"]["source"]}.'),
      'Wall time per member: ' + ', '.join(f'{m["wall_time_s"] / 60:.0f} min' if m['wall_time_s'] else 'not recorded'
                                           for m in members)
      + f'; machine: {"; ".join(sorted({m["machine"] for m in members}))}.', '',
      '## Test figures', '', *_figures_lines(record['test']), '',
      '## Limitations', '',
      '- Trained on one public collection (TCGA-LGG via Kaggle): a few institutions, scanners and protocols; other '
      'sites\' scans may score worse, and no figure here says how much.',
      '- The masks outline the FLAIR abnormality the dataset\'s annotators drew, not a histological tumour boundary.',
      '- The test figures rest on a dozen patients: their intervals are wide.', '',
      '## Licence', '', f'Weights: {record["licence"]["weights"]} ({record["licence"]["weights_url"]}), see LICENSE; '
      f'the jaxbrain code: {record["licence"]["code"]}.', '',
      '## Citations', '', *[f'- {c}' for c in record['citations']], '',
      '## Checking this bundle', '', '`sha256sum -c SHA256SUMS` in this folder; jaxbrain checks every file before use.',
  ]
  return '\n'.join(lines) + '\n'
