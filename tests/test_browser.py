"""Lesson 08's widgets in a real browser: JupyterLab on a free loopback port, a notebook that builds the
widgets from the library and the committed results (lesson 08 itself is not executed again), driven by
Debian's chromium through Playwright for Python (nothing is downloaded). Screenshots go to
build/browser-test/ as test artefacts."""
import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from chromium import ARTIFACTS, launch, playwright_or_skip  # tests/chromium.py

playwright = playwright_or_skip()

# The notebook the browser runs: the lesson's widgets, built from p2p_lib and the committed sweep results.
CELLS = [
    """import numpy as np, torch
from p2p_lib import facades_dir
from p2p_lib.ablation import lambda_view
from p2p_lib.results import load_sweep
from p2p_lib.facadedraw import facade_palette
from p2p_lib.stepper import StepByStep
from p2p_lib.train import reference_model, val_tensors
from p2p_lib.widgets import DrawFacade, LambdaExplorer, PatchExplorer, StepperWidget, VerdictExplorer
sweep = load_sweep()
A, B = val_tensors(facades_dir(), "BtoA", 128, 4)
reference = reference_model(with_discriminator=True)
print("ready")""",
    "lam = LambdaExplorer(sweep, A, B); lam.widget",
    "patch = PatchExplorer(sweep, B[0]); patch.widget",
    "stepper = StepperWidget(StepByStep(facades_dir())); stepper.widget",
    "verdicts = VerdictExplorer({'reference': (reference['G'], reference['D'])}, A, B); verdicts.widget",
    """from p2p_lib.inference import to_pil
maps = [np.asarray(to_pil(a)) for a in val_tensors(facades_dir(), "BtoA", 256, 2)[0]]
draw = DrawFacade(reference['G'], facade_palette(facades_dir()), maps); draw.widget""",
]


# JavaScript run in the page (JupyterLab started with expose_app_in_browser): the open notebook's state.
KERNEL_IDLE = """() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
    const kernel = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
    return !!kernel && kernel.status === 'idle'; }"""
ALL_EXECUTED = """(count) => { const w = window.jupyterapp.shell.currentWidget;
    const cells = w.content.widgets;
    return cells.length === count && cells.every(c => c.model.executionCount !== null); }"""


LAST_OUTPUT_HTML = """() => { const areas = document.querySelectorAll('.jp-CodeCell .jp-OutputArea');
    return areas.length ? areas[areas.length - 1].innerHTML : 'no output areas'; }"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_notebook(path: Path) -> None:
    cells = [{"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {}, "outputs": [],
              "source": source} for i, source in enumerate(CELLS)]
    path.write_text(json.dumps({"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                            "language": "python"}},
                                "nbformat": 4, "nbformat_minor": 5}))


@pytest.fixture
def lab(tmp_path):
    "A JupyterLab server on a free loopback port, serving tmp_path; (url base, token)."
    write_notebook(tmp_path / "widgets.ipynb")
    port, token = free_port(), "p2p-browser-test"
    settings = tmp_path / ".lab-settings"
    for plugin, values in {"notebook-extension/tracker": {"windowingMode": "none"},   # every cell in the page
                           "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False}}.items():
        path = settings / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / ".jupyter"), "JUPYTER_RUNTIME_DIR": str(tmp_path / ".rt"),
           "JUPYTERLAB_SETTINGS_DIR": str(settings), "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / ".ws")}
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--ServerApp.token={token}", f"--ServerApp.root_dir={tmp_path}", "--allow-root",
         "--LabApp.expose_app_in_browser=True", "--ServerApp.disable_check_xsrf=True"],
        env=env, stdout=open(tmp_path / "lab.log", "w"), stderr=subprocess.STDOUT, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if server.poll() is not None:
                pytest.fail("JupyterLab exited:\n" + (tmp_path / "lab.log").read_text()[-3000:])
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail("JupyterLab did not start in 90 s:\n" + (tmp_path / "lab.log").read_text()[-3000:])
    yield base, token
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()


def image_bytes(page, locator) -> bytes:
    "The bytes behind an <img> (an ipywidgets.Image shows its value through a blob: URL)."
    src = locator.get_attribute("src")
    data = page.evaluate("""async (src) => {
        const buffer = await (await fetch(src)).arrayBuffer();
        let text = ""; new Uint8Array(buffer).forEach(b => text += String.fromCharCode(b)); return btoa(text); }""", src)
    return base64.b64decode(data)


def output_of(page, index: int):
    "The output area of code cell `index` of the open notebook."
    return page.locator(".jp-Notebook .jp-CodeCell").nth(index).locator(".jp-OutputArea")


def test_the_widgets_work_in_a_real_browser(lab):
    from p2p_lib.ablation import lambda_view
    from p2p_lib.results import load_sweep
    base, token = lab
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    sweep = load_sweep()
    with playwright.sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(f"{base}/lab/tree/widgets.ipynb?token={token}", wait_until="domcontentloaded")
            page.wait_for_function(KERNEL_IDLE, timeout=90_000)
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            page.wait_for_function(ALL_EXECUTED, arg=len(CELLS), timeout=180_000)
            page.wait_for_function(KERNEL_IDLE, timeout=180_000)
            page.locator("canvas").last.wait_for(timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "01_built.png"), full_page=True)

            # λ: one step right from 100 is 1000; the metrics and the image shown are the committed ones
            slider = output_of(page, 1).locator(".widget-slider .noUi-handle").first
            slider.focus()
            slider.press("ArrowRight")
            view = lambda_view(sweep, 1000)
            metrics = output_of(page, 1).locator(".widget-html").first
            metrics.filter(has_text="λ = 1000").wait_for(timeout=30_000)
            if view["seeds"]:
                assert f"L1 ↓ {view['metrics']['L1']['mean']:.4f}" in metrics.inner_text()
                shown = image_bytes(page, output_of(page, 1).locator("img").nth(1))
                assert shown == view["outputs_png"].read_bytes()
            else:
                assert "not run yet" in metrics.inner_text()
            output_of(page, 1).screenshot(path=str(ARTIFACTS / "02_lambda_1000.png"))

            # the patch slider: one step left from n_layers 3 is n_layers 2, a 34-px receptive field
            handle = output_of(page, 2).locator(".widget-slider .noUi-handle").first
            handle.focus()
            handle.press("ArrowLeft")
            output_of(page, 2).get_by_text("34 px").wait_for(timeout=30_000)
            output_of(page, 2).screenshot(path=str(ARTIFACTS / "03_patch_n_layers_2.png"))

            # step by step: every click is one more point
            out = output_of(page, 3)
            out.get_by_role("button", name="D step").click()
            out.get_by_text("update 1 (D)").wait_for(timeout=30_000)
            out.get_by_role("button", name="G step").click()
            out.get_by_text("update 2 (G)").wait_for(timeout=30_000)
            out.screenshot(path=str(ARTIFACTS / "04_stepped.png"))

            # what D sees: moving the row slider outlines another patch and says its verdict
            out = output_of(page, 4)
            text = out.locator(".widget-html").last.inner_text()
            handle = out.locator(".widget-slider .noUi-handle").nth(1)  # val pair, row, column: the row
            handle.focus()
            for _ in range(3):
                handle.press("ArrowLeft")
            page.wait_for_function("([el, before]) => el.innerText !== before",
                                   arg=[out.locator(".widget-html").last.element_handle(), text], timeout=30_000)
            out.screenshot(path=str(ARTIFACTS / "05_verdicts.png"))

            # draw: a rectangle on the canvas changes the photo
            photo = output_of(page, 5).locator("img").last
            before = image_bytes(page, photo)
            canvas = output_of(page, 5).locator("canvas").last
            canvas.scroll_into_view_if_needed()
            box = canvas.bounding_box()
            page.mouse.move(box["x"] + 40, box["y"] + 60)
            page.mouse.down()
            page.mouse.move(box["x"] + 120, box["y"] + 140, steps=5)
            page.mouse.up()
            deadline = time.monotonic() + 30
            while image_bytes(page, photo) == before:
                assert time.monotonic() < deadline, "the photo did not change after drawing"
                time.sleep(0.5)
            output_of(page, 5).screenshot(path=str(ARTIFACTS / "06_drawn.png"))
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "99_failure.png"), full_page=True)
            print("last output:", page.evaluate(LAST_OUTPUT_HTML)[:2000])
            raise
        browser.close()
