"""``grefine serve`` (grefine_core.app.webui): the page's logic through its Python side, then the
page itself in a real browser (Debian's Chromium driven by Playwright, never downloaded), with the
``tiny`` and ``oracle`` presets. Proves the plumbing and the planted-truth logic, not quality."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio", reason="the ui extra is not installed: pip install 'grefine[ui]'")

from grefine_core.app import webui  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CAT = ROOT / "examples" / "images" / "cat_table.png"
ORACLE = ROOT / "examples" / "oracle"
CHROMIUM = Path("/usr/lib/chromium/chromium")  # Debian's binary (/usr/bin/chromium is a wrapper)
#: Where the screenshots go: the test's own folder, or $GREFINE_SCREENSHOT_DIR (docs/ui.md's
#: picture is made with GREFINE_SCREENSHOT_DIR=docs/images).
SHOTS_ENV = "GREFINE_SCREENSHOT_DIR"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = webui.Server("oracle", str(tmp_path_factory.mktemp("serve")))
    yield s
    s.close()


def oracle_prompt(name):
    import csv

    with (ORACLE / "prompts.csv").open() as fh:
        return next(r["prompt"] for r in csv.DictReader(fh) if Path(r["image"]).stem == name)


# ---------------------------------------------------------------- the page's Python side


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not an image at all", "not a readable image"),
        ("tiny", "is 1x1 px; grefine needs at least 16x16"),
        ("huge", "the limit is 1 MB"),
    ],
)
def test_bad_uploads_give_a_page_message(server, tmp_path, monkeypatch, content, message):
    path = tmp_path / "upload.png"
    if content == "tiny":
        Image.new("RGB", (1, 1)).save(path)
    elif content == "huge":
        monkeypatch.setattr(webui, "MAX_UPLOAD_MB", 1)
        path.write_bytes(b"\0" * (2 << 20))
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as e:
        server.read_upload(str(path))
    assert str(path) not in str(e.value) and "\n" not in str(e.value)


def test_the_prompt_comes_from_the_images_metadata(server, tmp_path):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", "a red cat on a table\nNegative prompt: blurry\nSteps: 20")
    Image.open(CAT).save(tmp_path / "a1111.png", pnginfo=info)
    prompt, message = server.read_upload(str(tmp_path / "a1111.png"))
    assert prompt == "a red cat on a table" and "A1111" in message


def test_the_mask_follows_tau_without_recomputing_and_finds_the_planted_defect(server):
    path = str(ORACLE / "wrong_colour.png")
    analysis = server.analyse(path, oracle_prompt("wrong_colour"), "oracle", [], 0)
    assert analysis.result.alignment.defects  # the planted wrong colour is named
    low, high = (server.remask(analysis, tau, 4).fraction for tau in (0.2, 0.8))
    assert low > high
    highlighted = webui.phrase_highlights(analysis.result)
    assert any(label and label.startswith("defect:") for _, label in highlighted)
    assert "".join(text for text, _ in highlighted) == analysis.prompt
    clean = server.analyse(str(ORACLE / "clean.png"), oracle_prompt("clean"), "oracle", [], 0)
    assert clean.result.high_quality  # the clean scene is left alone


def test_refine_writes_the_png_and_report_in_the_servers_folder(tmp_path):
    s = webui.Server("tiny", str(tmp_path / "serve"))
    analysis = s.analyse(str(CAT), "a red cat on a wooden table", "tiny", [], 3)
    result, png, report = s.refine(analysis, 0.3, 2, 0.5)
    assert png.is_file() and report.is_file() and s.temp in png.parents
    assert result.stage("stage1").info["strength"] == pytest.approx(0.5)  # the page's strength
    import json

    fingerprint = json.loads(report.read_text())["fingerprint"]
    assert "0.3" in json.dumps(fingerprint)  # the report records the page's tau
    s.close()
    assert not s.temp.exists()


# ---------------------------------------------------------------- the page in a browser


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def page_url(tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    pytest.importorskip("playwright", reason="playwright is not installed (the dev extra)")
    port = free_port()
    app, server = webui.serve("oracle", "127.0.0.1", port, block=False)
    yield f"http://127.0.0.1:{port}", server
    app.close()
    server.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM))
        yield b
        b.close()


def upload(page, path):
    clear = page.locator("#upload").get_by_role("button", name="Clear")
    if clear.count():  # the file box holds the previous upload: empty it first, as a user does
        clear.first.click()
        page.locator("#message").get_by_text("upload an image first").wait_for(timeout=30_000)
    page.locator("#upload input[type=file]").set_input_files(str(path))


def mask_line(page):
    """The scores' "mask: N% of pixels" line (what the tau slider changes)."""
    lines = page.locator("#scores").inner_text().splitlines()
    return next(line for line in lines if line.startswith("mask:"))


def test_the_page_end_to_end(page_url, browser, tmp_path):
    url, server = page_url
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(url)
    upload(page, ORACLE / "noisy.png")  # planted: a noisy quadrant
    page.locator("#prompt textarea").fill(oracle_prompt("noisy"))
    page.locator("#analyse").click()
    page.locator("#scores").get_by_text("p =", exact=False).wait_for(timeout=120_000)
    page.locator("#mask img").first.wait_for(timeout=60_000)
    page.locator("#p-map img").first.wait_for()
    shots = Path(os.environ.get(SHOTS_ENV) or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "analysed.png"), full_page=True)
    page.wait_for_timeout(1500)  # the sliders take the preset's own tau and dilation
    before = mask_line(page)
    tau = page.locator("#tau input[type=number]")
    tau.fill("0.99")
    tau.press("Enter")
    page.wait_for_function(
        """s => { const t = document.querySelector('#scores').innerText;
                  const m = t.split('\\n').find(l => l.startsWith('mask:'));
                  return m && m !== s; }""",
        arg=before,
        timeout=60_000,
    )
    page.locator("#refine").click()
    page.locator("#result").get_by_text("refined", exact=False).wait_for(timeout=240_000)
    page.locator("#compare img").first.wait_for()
    page.screenshot(path=str(shots / "ui.png"), full_page=True)
    assert (shots / "ui.png").stat().st_size > 10_000
    with page.expect_download() as download:
        page.locator("#png a").first.click()
    saved = tmp_path / "refined.png"
    download.value.save_as(saved)
    with Image.open(saved) as im, Image.open(ORACLE / "noisy.png") as original:
        assert im.size == original.size
    page.close()


def test_the_page_with_the_tiny_preset(page_url, browser):
    """The same round trip with random-weight models of the real architectures (the plumbing)."""
    url, _ = page_url
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(url)
    choose = page.locator("#preset input")
    choose.click()
    choose.fill("tiny")
    page.get_by_role("option", name="tiny").click()
    upload(page, CAT)
    page.locator("#prompt textarea").fill("a red cat on a wooden table")
    page.locator("#analyse").click()
    page.locator("#scores").get_by_text("random-weight models", exact=False).wait_for(
        timeout=180_000
    )
    page.locator("#refine").click()
    page.locator("#result").get_by_text("refined", exact=False).wait_for(timeout=240_000)
    assert page.locator("#report a").first.get_attribute("download") == "cat_table.json"
    page.close()


def rss_mb():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_bad_uploads_in_the_page_and_twenty_uploads_in_a_row(page_url, browser, tmp_path):
    url, _ = page_url
    page = browser.new_page()
    page.goto(url)
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    upload(page, bad)
    page.locator("#message").get_by_text("not a readable image", exact=False).wait_for(
        timeout=30_000
    )
    one = tmp_path / "one.png"
    Image.new("RGB", (1, 1)).save(one)
    upload(page, one)
    page.locator("#message").get_by_text("at least 16x16", exact=False).wait_for(timeout=30_000)
    rng = np.random.default_rng(0)
    sizes = []
    for i in range(20):
        path = tmp_path / f"u{i}.png"
        Image.fromarray((rng.random((96, 96, 3)) * 255).astype(np.uint8)).save(path)
        upload(page, path)
        page.locator("#message").get_by_text(f"u{i}.png: 96x96 image").wait_for(timeout=30_000)
        if i in (4, 19):
            sizes.append(rss_mb())
    assert sizes[1] - sizes[0] < 40, f"RSS grew from {sizes[0]:.0f} to {sizes[1]:.0f} MB"
    page.close()


def test_serve_without_gradio_or_with_an_unknown_preset_is_one_line(monkeypatch, capsys):
    import sys

    from grefine_core.app.cli import main

    assert main(["serve", "--preset", "nosuch"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--preset 'nosuch': unknown preset" in err and len(err.splitlines()) == 1
    monkeypatch.setitem(sys.modules, "gradio", None)  # as if the ui extra were missing
    assert main(["serve", "--preset", "tiny", "--port", str(free_port())]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install 'grefine[ui]'" in err and len(err.splitlines()) == 1
