"""The report pages in a real browser: headless Chromium from the OS packages, driven by Playwright.

Skipped where Chromium or Playwright is missing, unless JAXBRAIN_REQUIRE_BROWSER=1 (`.ci/run` sets
it, and installs both), where a missing browser fails the test instead of hiding it.
"""
import asyncio
import csv
import os
import shutil

import pytest

from jaxbrain import cli

PHONE = {'width': 390, 'height': 844}


def _chromium() -> str:
  path = os.environ.get('CHROMIUM') or shutil.which('chromium') or shutil.which('chromium-browser')
  try:
    import playwright.async_api  # noqa: F401
  except ImportError:
    path = None
  if path is None:
    if os.environ.get('JAXBRAIN_REQUIRE_BROWSER') == '1':
      pytest.fail('JAXBRAIN_REQUIRE_BROWSER=1 but Chromium or Playwright is missing')
    pytest.skip('needs Chromium (apt install chromium) and Playwright (pip install playwright)')
  return path


# What the machine's closed network needs (Chromium otherwise retries Google's hosts at every start).
CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync']


def _in_browser(check, *args):
  """Runs `await check(page, *args)` on a fresh phone-width page and returns the console errors,
  page errors and failed loads it collected.

  Playwright's async API, not its sync one: the sync API runs on greenlets, which upset CPython
  3.11's recursion accounting so that pytest crashes (INTERNALERROR) while reporting a failure.
  """
  from playwright.async_api import async_playwright

  executable = _chromium()

  async def run():
    async with async_playwright() as p:
      browser = await p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
      try:
        page = await browser.new_page(viewport=PHONE)
        problems = []
        page.on('console', lambda m: problems.append(f'console: {m.text}') if m.type == 'error' else None)
        page.on('pageerror', lambda e: problems.append(f'page error: {e}'))
        page.on('requestfailed', lambda r: problems.append(f'failed to load {r.url}'))
        await check(page, *args)
        return problems
      finally:
        await browser.close()

  return asyncio.run(run())


async def _no_horizontal_scroll(page) -> bool:
  return await page.evaluate('document.documentElement.scrollWidth <= window.innerWidth')


def test_prediction_report_slider_shows_each_slice_of_predictions_csv(trained_runs, phantom_png, tmp_path):
  """Catches: a script error or a missing overlay (console / failed load), a slider that does not
  move the image or caption, captions or images out of step with predictions.csv (wrong order,
  wrong slice), and a page wider than a phone."""
  classifier, segmenter = trained_runs
  out = tmp_path / 'out'
  assert cli.main(['predict', str(phantom_png), '--run', str(classifier), '--seg-run', str(segmenter), '--out', str(out),
                   '--no-progress']) == 0
  with open(out / 'predictions.csv') as f:
    rows = list(csv.DictReader(f))
  patients = list(dict.fromkeys(r['patient'] for r in rows))
  mine = [r for r in rows if r['patient'] == patients[1]]

  def expected(i: int) -> tuple[str, str]:
    row = mine[i]
    label = 'tumor' if row['label'] == '1' else 'no tumor'
    stem = os.path.splitext(os.path.basename(row['path']))[0]
    return (f'slice {row["slice"]} \u00b7 p(tumor) {float(row["probability"]):.3f} \u00b7 {label} \u00b7 '
            f'{row["tumor_pixels"]} px', f'overlays/{stem}_overlay.png')

  async def check(page):
    await page.goto((out / 'report.html').as_uri())
    sections = page.locator('section.patient')
    assert await sections.count() == len(patients)
    section = sections.nth(1)
    slider = section.locator('input[type=range]')

    async def shown() -> tuple[str, str]:
      return (await section.locator('.caption').text_content(),
              await section.locator('.frame img').get_attribute('src'))

    first = int(await slider.input_value())
    assert await shown() == expected(first)
    await slider.focus()
    key = 'ArrowLeft' if first == len(mine) - 1 else 'ArrowRight'
    await page.keyboard.press(key)
    moved = first + (1 if key == 'ArrowRight' else -1)
    assert int(await slider.input_value()) == moved
    assert await shown() == expected(moved) != expected(first)
    await slider.fill('0')  # dragging to the start
    assert await shown() == expected(0)
    assert await section.locator('.frame img').evaluate('img => img.complete && img.naturalWidth > 0')
    assert await _no_horizontal_scroll(page)

  assert _in_browser(check) == []


def test_run_report_opens_with_its_figures(trained_runs):
  """Catches: a run page that references figures the run does not have (failed loads), a script
  or console error, and a page wider than a phone."""
  classifier, _ = trained_runs

  async def check(page):
    await page.goto((classifier / 'report.html').as_uri())
    assert 'Test patients' in await page.text_content('body')
    images = page.locator('img')
    assert await images.count() >= 3
    for i in range(await images.count()):
      await images.nth(i).scroll_into_view_if_needed()
      assert await images.nth(i).evaluate('img => img.decode().then(() => img.naturalWidth > 0)')
    assert await _no_horizontal_scroll(page)

  assert _in_browser(check) == []


def test_pages_say_what_they_show_without_the_docs(trained_runs, phantom_png, tmp_path):
  """Catches, as a reader sees the pages: a phantom-trained run's pages without the banner that its
  figures mean nothing for patients; a figure without its one-line meaning (ROC AUC, sensitivity,
  specificity, per-volume Dice, the pointing game and why it is coarse); test overlays without a
  legend; a probability plot without axes; a mask rule shown as `MaskRule(...)` and a checkpoint
  as a bare `checkpoints/best/N`; and a plot whose dashed line stands at the classifier's 0.5
  while the pair's detector labels at another threshold."""
  import json
  from tests.localize.helpers import store_gate
  classifier, segmenter = trained_runs
  pair = [shutil.copytree(run, tmp_path / run.name) for run in (classifier, segmenter)]
  store_gate(*pair, None)
  gate_file, = (pair[1] / 'gates').iterdir()
  gate_file.write_text(json.dumps({'gate': None, 'detector': {'combination': 'mean', 'smoothing': 1, 'threshold': 0.45}}))
  out = tmp_path / 'out'
  assert cli.main(['predict', str(phantom_png), '--run', str(pair[0]), '--seg-run', str(pair[1]), '--out', str(out),
                   '--no-progress']) == 0

  async def check(page):
    await page.goto((classifier / 'report.html').as_uri())
    text = ' '.join((await page.text_content('body')).split())
    assert await page.locator('.banner').is_visible() and 'mean nothing for patients' in text
    for meaning in ('roc auc', 'sensitivity', 'specificity', 'gradcam pointing game'):
      assert await page.locator('dl.defs dt', has_text=meaning).count() == 1, meaning
    assert '4x4 cells at 128 px' in text and 'the epoch validation chose' in text
    await page.goto((segmenter / 'report.html').as_uri())
    text = ' '.join((await page.text_content('body')).split())
    assert await page.locator('dl.defs dt', has_text='dice per volume').count() == 1
    assert 'Green outline: the true tumor' in text and 'MaskRule(' not in text and '"threshold"' not in text
    assert 'a pixel is tumor where its probability is above' in text
    await page.goto((out / 'report.html').as_uri())
    text = ' '.join((await page.text_content('body')).split())
    assert await page.locator('.banner').is_visible() and 'MaskRule(' not in text
    plot = page.locator('section.patient').first.locator('svg.plot')
    labels = [t.strip() for t in await plot.locator('text').all_text_contents()]
    assert labels[:2] == ['1', '0'] and labels[2].startswith('slice ') and labels[3].startswith('slice ')
    assert await plot.locator('line.threshold').get_attribute('data-threshold') == '0.45'
    assert 'tumour at >= 0.45' in text and 'the epoch validation chose' in text

  assert _in_browser(check) == []
