"""``geot report``: one self-contained HTML page for a folder of predictions, readable offline.

The page holds a sortable table of the scans and one 3D view that shows the scan picked in the table or
the selector (rotate, zoom, hover for the FDI code, click a legend entry to hide a tooth, confidence
overlay). plotly.js is embedded once and every scan's figure sits in its own inert JSON block, parsed
only when shown: the page is plotly.js (about 4.8 MB) plus about 0.25 MB per 8k-vertex scan, and opens
quickly however many scans it holds. A Content Security Policy forbids the page any request, so it works
the same on a machine without network.
``#scan=<name>&colour=confidence`` in the address opens a scan directly.
"""

from __future__ import annotations

import html
from pathlib import Path
from string import Template

from plotly.offline import get_plotlyjs

from geot.engine.evaluate import find_predictions
from geot.errors import ScanError
from geot.io.atomic import atomic_write
from geot.report.figure import scan_figure
from geot.report.prediction import PredictedScan, read_prediction

COLUMNS = ("scan", "jaw", "teeth", "missing (x1-x7)", "mean confidence", "warnings and problems")


def write_report(pred_dir: Path, out: Path | None = None) -> Path:
    """Write the HTML report of ``pred_dir`` to ``out`` (default ``pred_dir/report.html``), atomically.

    Every prediction JSON gets a row, unreadable ones with their problem; other JSON files (such as
    ``geot evaluate``'s summary.json) are left out. Raises ScanError when the folder holds no prediction.
    """
    pred_dir = Path(pred_dir)
    out = Path(out) if out is not None else pred_dir / "report.html"
    scans: list[PredictedScan] = []
    for name, paths in sorted(find_predictions(pred_dir).items()):
        for path in paths:
            label = name if len(paths) == 1 else str(path.relative_to(pred_dir).with_suffix(""))
            scan = read_prediction(path, label)
            if scan is not None:
                scans.append(scan)
    if not scans:
        raise ScanError(pred_dir, "no prediction JSONs (<name>.json with 'labels') found")
    page = render_page(scans, title=f"geot predictions: {pred_dir.resolve().name}")
    try:
        with atomic_write(out, "wb") as f:
            f.write(page.encode("utf-8"))
    except OSError as exc:
        raise ScanError(out, f"cannot write the report ({exc.strerror or exc})") from None
    return out


def render_page(scans: list[PredictedScan], title: str) -> str:
    """The whole HTML page for ``scans`` (geometry is turned into figures one scan at a time)."""
    rows, figures, options = [], [], []
    for i, scan in enumerate(scans):
        figure = None
        if scan.geometry is not None and scan.jaw is not None:
            figure = scan_figure(scan.geometry, scan.jaw)  # plotly's JSON escapes <, > and /: safe in <script>
            scan.geometry = None  # keep one scan's arrays in memory at a time
            figures.append(f'<script type="application/json" id="figure-{i}">{figure}</script>')
            options.append(f'<option value="{i}">{html.escape(scan.name)}</option>')
        rows.append(_row(i, scan, figure is not None))
    n_flagged = sum(bool(s.problems or s.warnings) for s in scans)
    summary = (f"{len(scans)} scan(s), {len(options)} with a 3D view, {n_flagged} with warnings or problems. "
               "Click a column to sort, a row to view the scan.")
    header = "".join(f'<th data-column="{k}">{html.escape(c)}</th>' for k, c in enumerate(COLUMNS))
    return _TEMPLATE.substitute(  # one pass: text put in is never searched for further $markers
        title=html.escape(title), summary=html.escape(summary), header=header, rows="\n".join(rows),
        options="\n".join(options) or '<option value="">no scan can be shown</option>',
        figures="\n".join(figures), plotlyjs=get_plotlyjs())


def _row(i: int, scan: PredictedScan, viewable: bool) -> str:
    notes = [("warning", w) for w in scan.warnings] + [("problem", p) for p in scan.problems]
    cells = [
        (scan.name, scan.name),
        (scan.jaw or "?", scan.jaw or ""),
        ("?", "") if scan.teeth is None else (str(len(scan.teeth)), len(scan.teeth)),
        ("?", "") if scan.missing is None else (", ".join(map(str, scan.missing)) or "none", len(scan.missing)),
        ("unknown" if scan.confidence is None else f"{scan.confidence:.3f}",
         "" if scan.confidence is None else scan.confidence),
        ("<br>".join(f'<span class="{kind}">{html.escape(text)}</span>' for kind, text in notes), len(notes)),
    ]
    tds = []
    for k, (text, key) in enumerate(cells):
        shown = text if k == 5 else html.escape(text)
        tds.append(f'<td data-sort="{html.escape(str(key))}">{shown}</td>')
    attrs = f' data-figure="{i}"' if viewable else ""
    return f'<tr{attrs} class="{"flagged" if notes else ""}">{"".join(tds)}</tr>'


_TEMPLATE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data: blob:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 1em 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: left; vertical-align: top; }
th { cursor: pointer; background: #f4f4f4; user-select: none; }
th[data-order="ascending"]::after { content: " \\25B2"; }
th[data-order="descending"]::after { content: " \\25BC"; }
tr[data-figure] { cursor: pointer; }
tr[data-figure]:hover, tr.shown { background: #eef4ff; }
.warning { color: #a15c00; } .problem { color: #b00020; }
#controls { display: flex; gap: 1.5em; align-items: center; }
#view { width: 100%; height: 75vh; min-height: 420px; border: 1px solid #ddd; }
.hint { color: #666; }
</style>
<script>$plotlyjs</script>
</head>
<body>
<h1>$title</h1>
<p>$summary</p>
<table id="scans">
<thead><tr>$header</tr></thead>
<tbody>
$rows
</tbody>
</table>
<div id="controls">
<label>scan <select id="scan">$options</select></label>
<label><input type="checkbox" id="confidence"> confidence overlay</label>
<span class="hint">Drag to rotate, scroll to zoom, hover for the tooth; click a legend entry to hide
that tooth, double-click to show it alone.</span>
</div>
<div id="view"></div>
$figures
<script>
"use strict";
const view = document.getElementById("view");
const picker = document.getElementById("scan");
const overlay = document.getElementById("confidence");
const LAYOUT = {
  margin: {l: 0, r: 0, t: 30, b: 0}, paper_bgcolor: "white", legend: {title: {text: "tooth"}},
  scene: {aspectmode: "data", dragmode: "orbit",
          xaxis: {visible: false}, yaxis: {visible: false}, zaxis: {visible: false},
          camera: {eye: {x: 0, y: -0.35, z: 1.9}, up: {x: 0, y: 1, z: 0}}},
};
const CONFIG = {displaylogo: false, responsive: true, showLink: false, showSendToCloud: false,
                modeBarButtonsToRemove: ["sendDataToCloud"]};
const SCALE = "Viridis";

function figure(index) {
  const fig = JSON.parse(document.getElementById("figure-" + index).textContent);
  const known = fig.data.every(t => t.customdata);
  overlay.disabled = !known;
  if (overlay.checked && known) {
    fig.data.forEach((t, n) => {
      const colour = {cmin: 0, cmax: 100, colorscale: SCALE, showscale: n === 0,
                      colorbar: {title: {text: "confidence %"}, x: -0.02, xanchor: "right"}};
      if (t.type === "mesh3d") { Object.assign(t, colour, {intensity: t.customdata}); }
      else { Object.assign(t.marker, colour, {color: t.customdata}); }
    });
  }
  return fig.data;
}

function show(index) {
  if (index === "" || !document.getElementById("figure-" + index)) { return; }
  picker.value = index;
  document.querySelectorAll("tr.shown").forEach(r => r.classList.remove("shown"));
  const row = document.querySelector('tr[data-figure="' + index + '"]');
  if (row) { row.classList.add("shown"); }
  const name = picker.options[picker.selectedIndex].text;
  const layout = Object.assign({}, LAYOUT, {title: {text: name}, uirevision: name});
  Plotly.react(view, figure(index), layout, CONFIG);
  const hash = "scan=" + encodeURIComponent(name) + (overlay.checked ? "&colour=confidence" : "");
  history.replaceState(null, "", "#" + hash);
}

function sortBy(th) {
  const column = th.cellIndex;
  const order = th.dataset.order === "ascending" ? "descending" : "ascending";
  document.querySelectorAll("th").forEach(h => delete h.dataset.order);
  th.dataset.order = order;
  const body = document.querySelector("#scans tbody");
  const key = r => r.cells[column].dataset.sort;
  const rows = Array.from(body.rows).sort((a, b) => {
    const x = key(a), y = key(b);
    if (x === "" || y === "") { return (x === "") - (y === ""); }  // unknown values last
    const nx = Number(x), ny = Number(y);
    const cmp = isNaN(nx) || isNaN(ny) ? x.localeCompare(y, undefined, {numeric: true}) : nx - ny;
    return order === "ascending" ? cmp : -cmp;
  });
  rows.forEach(r => body.appendChild(r));
}

document.querySelectorAll("th").forEach(th => th.addEventListener("click", () => sortBy(th)));
document.querySelectorAll("tr[data-figure]").forEach(r => r.addEventListener("click", () => {
  show(r.dataset.figure); view.scrollIntoView({behavior: "smooth"});
}));
picker.addEventListener("change", () => show(picker.value));
overlay.addEventListener("change", () => show(picker.value));

const wanted = new URLSearchParams(location.hash.slice(1));
overlay.checked = wanted.get("colour") === "confidence";
const start = Array.from(picker.options).find(o => o.text === wanted.get("scan")) || picker.options[0];
show(start.value);
</script>
</body>
</html>
""")
