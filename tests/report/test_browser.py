"""The report in a real headless browser: it renders offline, in the palette's colours, and its table works."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from geot import labels as fdi
from geot.report import write_report
from tests.report.browser import dump_dom, needs_browser, page_requests, screenshot, shade_matches
from tests.report.conftest import write_prediction

pytestmark = [needs_browser, pytest.mark.slow]
GREYS = {8, 16}  # grey classes: page text and frames are grey too


@pytest.fixture(scope="module")
def report(tmp_path_factory, scans) -> Path:
    """A report of three scans; the first has per-vertex confidence from 0.5 to 1."""
    pred = tmp_path_factory.mktemp("pred")
    rng = np.random.default_rng(1)
    for k, scan in enumerate(scans):
        write_prediction(pred, scan, confidence=rng.uniform(0.5, 1.0, len(scan.labels)) if k == 0 else None)
    return write_report(pred)


def instrumented(report: Path, work: Path, script: str, keep_csp: bool = True) -> str:
    """A copy of the page with ``script`` run after its own (and without its CSP unless ``keep_csp``)."""
    text = report.read_text()
    if not keep_csp:
        text = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", text)
    copy = work / f"instrumented-{len(list(work.glob('instrumented-*')))}.html"
    copy.write_text(text.replace("</body>", f"<script>{script}</script></body>"))
    return copy.as_uri()


def test_page_renders_offline_in_palette_colours(report, scans, tmp_path):
    image = screenshot(report.as_uri(), tmp_path)
    assert (image < 245).any(axis=2).mean() > 0.15  # not blank
    present = set(np.unique(fdi.fdi_to_class(scans[0].labels, scans[0].jaw)).tolist())
    matches = {k: shade_matches(image, fdi.PALETTE[k]) for k in range(fdi.NUM_CLASSES) if k not in GREYS}
    # a tooth drawn in the view covers thousands of pixels; a legend swatch alone about a hundred
    assert all(matches[k] > 1000 for k in present - GREYS), matches
    assert all(matches[k] < 300 for k in set(matches) - present), matches


def test_confidence_overlay_replaces_the_tooth_colours(report, scans, tmp_path):
    image = screenshot(report.as_uri() + f"#scan={scans[0].name}&colour=confidence", tmp_path)
    assert (image < 245).any(axis=2).mean() > 0.15
    present = set(np.unique(fdi.fdi_to_class(scans[0].labels, scans[0].jaw)).tolist()) - GREYS
    assert sum(shade_matches(image, fdi.PALETTE[k]) for k in present) < 1000
    yellow = shade_matches(image, [253, 231, 37])  # Viridis at 100%: the most confident vertices
    assert yellow > 200


def test_the_page_requests_nothing_from_the_network(report, tmp_path):
    # without its Content-Security-Policy, so that a request the page tried would really go out and be logged
    assert page_requests(instrumented(report, tmp_path, "", keep_csp=False), tmp_path) == []
    # the log does catch a page's request: the same page fetching one image
    probe = instrumented(report, tmp_path, "new Image().src = 'http://example.invalid/probe.png';", keep_csp=False)
    assert page_requests(probe, tmp_path) == ["http://example.invalid/probe.png"]


def test_dom_lists_every_scan_and_draws_the_first(report, scans, tmp_path):
    dom = dump_dom(report.as_uri(), tmp_path)
    names = re.findall(r'<tr data-figure="\d+" class="[^"]*">\s*<td data-sort="([^"]+)"', dom)
    assert sorted(names) == sorted(s.name for s in scans)
    assert 'class="js-plotly-plot"' in dom and "gl-container" in dom  # plotly drew into the view
    shown = re.search(r'<tr data-figure="(\d+)" class="[^"]*shown', dom)
    assert shown is not None and shown.group(1) == "0"


def test_clicks_sort_the_table_and_pick_the_scan(report, scans, tmp_path):
    clicks = """
      document.querySelector('th[data-column="0"]').click();
      document.querySelector('th[data-column="0"]').click();   // twice: descending by name
      document.querySelectorAll('tbody tr')[2].click();         // the last name in descending order
      document.body.dataset.state = JSON.stringify({
        names: Array.from(document.querySelectorAll('tbody tr td:first-child')).map(td => td.textContent),
        picked: document.getElementById('scan').selectedOptions[0].text,
        title: document.querySelector('.gtitle') ? document.querySelector('.gtitle').textContent : null,
        hash: location.hash, traces: document.getElementById('view').data.length});
    """
    dom = dump_dom(instrumented(report, tmp_path, clicks), tmp_path)
    import html
    import json

    state = json.loads(html.unescape(re.search(r'data-state="([^"]*)"', dom).group(1)))
    names = sorted((s.name for s in scans), reverse=True)
    assert state["names"] == names
    assert state["picked"] == names[2] and state["title"] == names[2]
    assert state["hash"] == f"#scan={names[2]}"
    picked = next(s for s in scans if s.name == names[2])
    assert state["traces"] == len(np.unique(picked.labels))
