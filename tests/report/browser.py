"""Drive Debian's headless chromium from tests: screenshots, the DOM after scripts ran, and its network log.

Every run gets a fresh profile and has networking blocked (no DNS, a proxy on a closed local port), so a
page that needs the network shows it by failing to render.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_browser = pytest.mark.skipif(CHROMIUM is None, reason="no headless browser: install Debian's chromium "
                                                            "(apt-get install chromium) to run the page tests")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=http://127.0.0.1:9",
         "--virtual-time-budget=15000"]


def chromium(url: str, work: Path, *extra: str) -> str:
    """Run chromium on ``url`` with a fresh profile under ``work``; return its stdout."""
    assert CHROMIUM is not None
    profile = work / f"profile-{len(list(work.glob('profile-*')))}"
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *extra, url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def screenshot(url: str, work: Path, size: tuple[int, int] = (1200, 1100)) -> np.ndarray:
    """The rendered page as an (H, W, 3) array of 0-255 floats."""
    from matplotlib.image import imread

    png = work / f"shot-{len(list(work.glob('shot-*.png')))}.png"
    chromium(url, work, f"--window-size={size[0]},{size[1]}", f"--screenshot={png}")
    return imread(png)[..., :3].astype(np.float64) * 255


def dump_dom(url: str, work: Path) -> str:
    """The page's DOM, serialised after its scripts ran."""
    return chromium(url, work, "--dump-dom")


def page_requests(url: str, work: Path) -> list[str]:
    """http(s) URLs the page asked for, from chromium's network log (the browser's own calls left out)."""
    log = work / f"net-{len(list(work.glob('net-*.json')))}.json"
    chromium(url, work, f"--log-net-log={log}", "--window-size=800,600", "--screenshot=" + str(work / "net.png"))
    data = json.loads(log.read_text())
    start = data["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    starts = [e.get("params", {}) for e in data["events"] if e["type"] == start]
    return [p["url"] for p in starts if p.get("url", "").startswith(("http:", "https:"))
            and p.get("initiator") != "not an origin"]  # 'not an origin': chromium's own traffic


def shade_matches(image: np.ndarray, colour: np.ndarray, tolerance: float = 10.0) -> int:
    """How many pixels are a lit or shaded version of ``colour`` (a multiple of it, within ``tolerance``)."""
    px = image.reshape(-1, 3)
    px = px[(px < 245).any(axis=1)]  # leave out the white background
    c = np.asarray(colour, dtype=np.float64)
    scale = px @ c / (c @ c)
    residual = np.linalg.norm(px - scale[:, None] * c, axis=1)
    return int(((residual < tolerance) & (scale > 0.45) & (scale < 1.2)).sum())
