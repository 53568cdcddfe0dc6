"""The HTML pages: one per series, and an index of the series.

Pages are static and self-contained apart from the images beside them, so
the ChRIS UI's file preview shows them as they are, and so do a browser's
``file://`` pages once downloaded. A few lines of JavaScript add a slice
viewer that cuts each slice out of its window's strip (one JPEG holding every
slice of every column); without it the montages and the links remain.
"""

from __future__ import annotations

import html
import json
from urllib.parse import quote


STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;max-width:1100px;color:#222}
h1{font-size:1.4em} h2{font-size:1.1em;margin-top:1.6em}
table{border-collapse:collapse} td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
.viewer canvas{image-rendering:pixelated;background:#000} .muted{color:#777}
"""


def escape(value: object) -> str:
    return html.escape(str(value), quote=True)


def url(path: str) -> str:
    """A relative path as an attribute value: percent-encoded and starting with ./, so that no folder
    name (``javascript:alert(1)``) is ever read as a URL scheme; then escaped for HTML."""
    return escape("./" + quote(path))


def script_json(value: object) -> str:
    """JSON to place inside <script>: no "<" (which could close the element), no ">" or "&"."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _rows(facts: list[tuple[str, object]]) -> str:
    return "\n".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in facts)


def series_page(title: str, facts: list[tuple[str, object]], windows: list[dict], slices: int,
                scree: str | None, dicom_dir: str | None, upstream: list[dict], warnings: list[str],
                diff_width: float, noise: dict | None = None) -> str:
    """``windows``: [{"label", "montage", "strip", "tile": [h, w], "per_column", "slices", "captions"}], the
    strip laid out as :func:`svd_render.images.save_strip` lays it out, the first caption the original;
    ``upstream``: the inputs earlier stages skipped or failed, [{"file", "reason"}]; ``diff_width`` the
    montage's difference window; ``noise`` the measured noise's pictures (:func:`render.noise_pictures`)."""
    montages = "\n".join(
        f'<h3>{escape(w["label"])}</h3><img src="{url(w["montage"])}" alt="montage, {escape(w["label"])}">'
        for w in windows)
    keys = ("label", "strip", "tile", "per_column", "slices")
    data = script_json([{k: w[k] for k in keys} for w in windows])
    captions = " | ".join(windows[0]["captions"])
    upstream_html = ("<ul>" + "".join(f"<li>{escape(s['file'])}: {escape(s['reason'])}</li>" for s in upstream)
                     + "</ul>" if upstream else '<p class="muted">none</p>')
    warnings_html = ("<h2>Warnings</h2><ul>" + "".join(f"<li>{escape(w)}</li>" for w in warnings) + "</ul>"
                     if warnings else "")
    dicom_html = (f'<p>Derived DICOM series (one file per slice): <a href="{url(dicom_dir + "/")}">{escape(dicom_dir)}/</a></p>'
                  if dicom_dir else "")
    scree_html = f"<h2>Singular values of the global SVD</h2>\n{scree}" if scree else ""
    noise_html = (f"""<h2>The noise measured in this series</h2>
<p class="muted">σ in uniform regions: {escape(noise["sigma_hu"].get("uniform", noise["sigma_hu"]["median"]))} HU;
over the object's cells: median {escape(noise["sigma_hu"]["median"])} HU (10–90 %:
{escape(noise["sigma_hu"]["p10"])}–{escape(noise["sigma_hu"]["p90"])} HU). Left: σ over the field, averaged
along the series, on cells of {escape(" × ".join(str(c) for c in noise["cell"][1:]))} pixels (black 0, white
{noise["map_max_hu"]:.3g} HU). Right: the in-plane noise power spectrum, averaged over rings.</p>
<p><img src="{url(noise["map"])}" alt="noise map" style="vertical-align:top;background:#000"> {noise["nps"]}</p>"""
                  if noise else "")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title><style>{STYLE}</style></head>
<body>
<h1>{escape(title)}</h1>
<table>{_rows(facts)}</table>
{warnings_html}
{dicom_html}
<h2>Slices</h2>
<div class="viewer">
<p><select id="win"></select> slice <input id="idx" type="range" min="0" max="{slices - 1}" value="{slices // 2}">
<span id="lbl"></span></p>
<div id="imgs"></div>
<p class="muted">from left: {escape(captions)}</p>
</div>
<script>
const W={data},K={len(windows[0]["captions"])},C={json.dumps(windows[0]["captions"])};
const win=document.getElementById('win'),idx=document.getElementById('idx'),box=document.getElementById('imgs');
W.forEach((w,i)=>win.add(new Option(w.label,i)));
const views=C.map(c=>{{const v=document.createElement('canvas');v.title=c;v.style.width=(96/K)+'%';box.append(v,' ');return v;}});
const strips={{}};
function strip(n){{if(!strips[n]){{strips[n]=new Image();strips[n].onload=show;strips[n].src=W[n].strip;}}return strips[n];}}
function show(){{const w=W[win.value],s=strip(win.value),i=+idx.value,[h,t]=w.tile;
const x=Math.floor(i/w.per_column)*K,y=(i%w.per_column)*h;
views.forEach((v,j)=>{{v.width=t;v.height=h;if(s.complete&&s.naturalWidth)v.getContext('2d').drawImage(s,(x+j)*t,y,t,h,0,0,t,h);}});
document.getElementById('lbl').textContent=(i+1)+' / '+w.slices;}}
win.onchange=show;idx.oninput=show;show();
</script>
<h2>Original against the denoised results</h2>
<p class="muted">Columns: the original, each denoised result, and original minus each result in a narrow
window of &plusmn;{diff_width / 2:g} HU around 0, set from the measured noise (mid-grey: no change; bright: the
result is darker than the original).</p>
{montages}
{noise_html}
{scree_html}
<h2>Files skipped or failed upstream</h2>
{upstream_html}
</body></html>
"""


def index_page(title: str, entries: list[dict]) -> str:
    """``entries``: [{"name", "href", "facts"}] one per series."""
    items = "\n".join(
        f'<li><a href="{url(e["href"])}">{escape(e["name"])}</a>: {escape(e["facts"])}</li>' for e in entries)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title><style>{STYLE}</style></head>
<body><h1>{escape(title)}</h1><ul>{items}</ul></body></html>
"""
