"""What the browser tests share: Debian's chromium on PATH, driven by Playwright for Python (which downloads no
browser here); the test module is skipped, saying what to install, when either is missing."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parents[1] / "build" / "browser-test"  # screenshots, kept as test artefacts
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# as root chromium needs --no-sandbox; containers often have a tiny /dev/shm
LAUNCH_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]


def playwright_or_skip():
    "playwright.sync_api, or skip the calling test module (call it at import time) with what to install."
    module = pytest.importorskip("playwright.sync_api", reason="install Playwright for Python: pip install playwright")
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH: install Debian's chromium (apt-get install chromium); `make test` does so "
                    "when it runs as root", allow_module_level=True)
    return module


def launch(p):
    "Headless chromium from a sync_playwright() context `p`."
    return p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
