"""Headless chromium, to see a report as a person would: the DOM after its scripts ran, or a screenshot.

Every network request goes to a proxy that is not there, so a page renders exactly as it would offline: a report
that needs a CDN shows up broken here rather than on an air-gapped machine. Chromium refuses to run as root
without `--no-sandbox`; the flag is added only then.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from detops.errors import DetopsError

NAMES = ("chromium", "chromium-browser", "google-chrome")
_FLAGS = (
    "--headless", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--proxy-server=127.0.0.1:9",
    "--virtual-time-budget=10000",
)


class BrowserError(DetopsError):
    """Chromium is missing, or failed to render a page."""


def find_chromium() -> str | None:
    return next((found for name in NAMES if (found := shutil.which(name))), None)


def _run(page: Path, action: list[str], timeout: float) -> str:
    binary = find_chromium()
    if binary is None:
        raise BrowserError(f"no chromium on PATH (looked for {', '.join(NAMES)}); on Debian: apt-get install -y "
                           "chromium")
    sandbox = ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    with tempfile.TemporaryDirectory(prefix="detops-chromium-") as profile:
        command = [binary, *_FLAGS, *sandbox, f"--user-data-dir={profile}", *action, Path(page).resolve().as_uri()]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BrowserError(f"chromium did not finish rendering {page} within {timeout:.0f} s") from None
    if done.returncode != 0:
        raise BrowserError(f"chromium failed on {page} (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    return done.stdout


def dump_dom(page: Path, timeout: float = 120) -> str:
    """The page's DOM once its scripts have run (chromium's --dump-dom)."""
    return _run(page, ["--dump-dom"], timeout)


def screenshot(page: Path, png: Path, size: tuple[int, int] = (1280, 2400), timeout: float = 120) -> Path:
    """A PNG of the top `size` (width, height) pixels of the rendered page."""
    _run(page, [f"--screenshot={Path(png).resolve()}", f"--window-size={size[0]},{size[1]}"], timeout)
    if not Path(png).is_file():
        raise BrowserError(f"chromium wrote no screenshot of {page} to {png}")
    return Path(png)
