"""End to end in a real browser: two raters rate a 6-image study in headless Chromium.

Playwright drives the system's Chromium (Debian package `chromium`; set JAXSYNTH_CHROMIUM to use
another binary) against the real server on a free loopback port. Rater 1 answers two images by
mouse, closes the browser, comes back with a fresh browser (new cookies) and finishes by keyboard;
rater 2 answers by mouse. The test then checks every stored answer in SQLite and the results.
Missing Chromium or Playwright is a test failure with the install command, never a skip.
Set JAXSYNTH_SCREENSHOT_DIR to keep the screenshots.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from test_reader_study import db_rows, live_server, make_folders, origin_of_item, tokens

from jaxsynth.cli import main
from jaxsynth.reader_study.create import create_study

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
]


def _chromium() -> str:
    path = os.environ.get("JAXSYNTH_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        pytest.fail(
            "the reader-study browser test needs Chromium: `apt-get install -y chromium` "
            "(or set JAXSYNTH_CHROMIUM=/path/to/chromium)",
            pytrace=False,
        )
    return path


def _playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "the reader-study browser test needs Playwright's Python client: "
            "`pip install -e '.[dev]'` (do not run `playwright install`; system Chromium is used)",
            pytrace=False,
        )
    return sync_playwright


def _shot(page, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    keep = os.environ.get("JAXSYNTH_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)


def _current_item(page) -> str:
    src = page.get_attribute("#tile", "src")
    return src.rsplit("/", 1)[1]


def test_two_raters_in_headless_chromium(tmp_path, capsys):
    chromium, sync_playwright = _chromium(), _playwright()
    real, synthetic = make_folders(tmp_path)
    study = tmp_path / "study"
    create_study(real, synthetic, study, n=6, num_raters=2, seed=0)
    t1, t2 = tokens(study)
    expected: dict[tuple[int, str], tuple[str, int | None]] = {}  # (rater, item) -> answer

    with live_server(study) as (base, _), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            # --- rater 1, first sitting: instructions, zoom, two answers by mouse
            context = browser.new_context(viewport={"width": 1100, "height": 800})
            page = context.new_page()
            page.goto(f"{base}/r/{t1}")
            assert page.inner_text("#progress-text") == "0 of 6 answered"
            _shot(page, tmp_path, "1_intro")
            page.click("#start")
            page.wait_for_selector("#tile")
            assert page.inner_text("#progress-text") == "Image 1 of 6"
            natural = page.eval_on_selector("#tile", "i => [i.naturalWidth, i.naturalHeight]")
            assert natural == [32, 32]
            assert page.eval_on_selector("#tile", "i => i.getBoundingClientRect().width") == 32
            page.click("#zoom-in")
            page.click("#zoom-in")
            page.click("#zoom-in")
            assert page.eval_on_selector("#tile", "i => i.getBoundingClientRect().width") == 128
            assert page.inner_text("#zoom-label") == "4×"
            rendering = page.eval_on_selector("#tile", "i => getComputedStyle(i).imageRendering")
            assert rendering == "pixelated"
            for k in range(2):
                item = _current_item(page)
                origin = origin_of_item(study, item)
                page.click("label.score:has-text('5')" if k == 0 else "label.score:has-text('2')")
                if k == 0:
                    _shot(page, tmp_path, "2_rate_zoomed")
                page.click("#call-real" if origin == "real" else "#call-synthetic")
                page.wait_for_load_state()
                expected[(1, item)] = (origin, 5 if k == 0 else 2)
            assert page.inner_text("#progress-text") == "Image 3 of 6"
            context.close()  # the browser goes away mid-study: nothing may be lost
            assert len(db_rows(study, "SELECT * FROM answers WHERE rater_id = 1")) == 2

            # --- rater 1, second sitting (fresh cookies): resumes at item 3, answers by keyboard
            context = browser.new_context(viewport={"width": 1100, "height": 800})
            page = context.new_page()
            page.goto(f"{base}/r/{t1}")
            assert page.inner_text("#progress-text") == "2 of 6 answered"
            assert page.inner_text("#start").strip() == "Continue"
            page.click("#start")
            page.wait_for_selector("#tile")
            assert page.inner_text("#progress-text") == "Image 3 of 6"
            # the zoom choice survives within a browser profile only; a fresh one starts native
            assert page.eval_on_selector("#tile", "i => i.getBoundingClientRect().width") == 32
            for k in range(4):
                item = _current_item(page)
                origin = origin_of_item(study, item)
                page.keyboard.press(str(k + 1))
                with page.expect_navigation():
                    page.keyboard.press("r" if origin == "real" else "s")
                expected[(1, item)] = (origin, k + 1)
            assert "All 6 images are answered" in page.inner_text("#progress-text")
            _shot(page, tmp_path, "3_done")
            context.close()

            # --- rater 2: everything "real", no score, by mouse
            context = browser.new_context(viewport={"width": 1100, "height": 800})
            page = context.new_page()
            page.goto(f"{base}/r/{t2}/rate")
            # the same item open in a second tab: once answered in one, the other tab's form is
            # stale and its answer is refused (409) with a way back to the study
            stale = context.new_page()
            stale.goto(f"{base}/r/{t2}/rate")
            assert _current_item(stale) == _current_item(page)
            for k in range(6):
                item = _current_item(page)
                with page.expect_navigation():
                    page.click("#call-real")
                expected[(2, item)] = ("real", None)
                if k == 0:
                    with stale.expect_navigation() as nav:
                        stale.click("#call-synthetic")
                    assert nav.value.status == 409
                    assert "already been answered" in stale.inner_text("main")
                    _shot(stale, tmp_path, "4_stale_tab_409")
                    with stale.expect_navigation():
                        stale.click("text=Continue the study")
                    assert stale.inner_text("#progress-text") == "Image 2 of 6"
                    stale.close()
            assert "All 6 images are answered" in page.inner_text("#progress-text")
            # going back in history re-fetches (no-store): it shows the current state, no old form
            page.go_back()
            assert "All 6 images are answered" in page.inner_text("#progress-text")
            # an unknown link shows the generic not-found page
            resp = page.goto(f"{base}/r/{'A' * 43}")
            assert resp.status == 404
            _shot(page, tmp_path, "5_not_found")
            context.close()
        finally:
            browser.close()

    rows = db_rows(
        study,
        "SELECT a.rater_id, i.item_token, a.call, a.score FROM answers a JOIN items i "
        "ON i.rater_id = a.rater_id AND i.position = a.position",
    )
    stored = {(r["rater_id"], r["item_token"]): (r["call"], r["score"]) for r in rows}
    assert stored == {
        (r, item): ((origin if r == 1 else "real"), score)
        for (r, item), (origin, score) in expected.items()
    }
    assert len(stored) == 12

    # SSIM given as a file (the computed path is covered in test_reader_study.py)
    synth = [
        r["source_path"]
        for r in db_rows(study, "SELECT source_path FROM images WHERE origin = 'synthetic'")
    ]
    ssim_json = tmp_path / "ssim.json"
    ssim_json.write_text(json.dumps({Path(p).name: 0.2 + 0.1 * i for i, p in enumerate(synth)}))
    code = main(["reader-study", "results", str(study), "--ssim-json", str(ssim_json)])
    out, err = capsys.readouterr()
    assert code == 0, err
    res = json.loads((study / "results" / "results.json").read_text())
    r1, r2 = res["per_rater"]
    assert r1["accuracy"]["pct"] == 100.0 and r1["answered"] == 6
    assert r2["real"]["pct_called_real"] == 100.0
    assert r2["synthetic"]["pct_called_synthetic"] == 0.0
    assert res["pooled"]["accuracy"]["correct"] == 9
    assert res["fleiss_kappa"]["kappa"] == pytest.approx(-1 / 3)
    assert res["likert_vs_ssim"]["n"] == 3  # rater 1 scored every synthetic image
    _copy_figure(study)


def _copy_figure(study: Path) -> None:
    keep = os.environ.get("JAXSYNTH_SCREENSHOT_DIR")
    if keep:
        shutil.copy(study / "results" / "results.png", Path(keep) / "6_results.png")
