"""The HTML pages: one per series, and an index of the series.

Pages are static and self-contained apart from the images beside them, so
the ChRIS UI's file preview shows them as they are. A few lines of
JavaScript add a slice slider; without it the montage and the links remain.
"""

from __future__ import annotations

import html
import json

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;max-width:1100px;color:#222}
h1{font-size:1.4em} h2{font-size:1.1em;margin-top:1.6em}
table{border-collapse:collapse} td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
.viewer img{width:48%;image-rendering:pixelated;background:#000} .muted{color:#777}
"""


def escape(value: object) -> str:
    return html.escape(str(value), quote=True)


def _rows(facts: list[tuple[str, object]]) -> str:
    return "\n".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in facts)


def series_page(title: str, facts: list[tuple[str, object]], windows: list[dict], slices: int,
                scree: str, dicom_dir: str | None, upstream: list[dict], warnings: list[str]) -> str:
    """``windows``: [{"label", "montage", "original": [png...], "denoised": [png...]}];
    ``upstream``: the inputs earlier stages skipped or failed, [{"file", "reason"}]."""
    montages = "\n".join(
        f'<h3>{escape(w["label"])}</h3><img src="{escape(w["montage"])}" alt="montage, {escape(w["label"])}">'
        for w in windows)
    data = json.dumps([{"label": w["label"], "original": w["original"], "denoised": w["denoised"]} for w in windows])
    upstream_html = ("<ul>" + "".join(f"<li>{escape(s['file'])}: {escape(s['reason'])}</li>" for s in upstream)
                     + "</ul>" if upstream else '<p class="muted">none</p>')
    warnings_html = ("<h2>Warnings</h2><ul>" + "".join(f"<li>{escape(w)}</li>" for w in warnings) + "</ul>"
                     if warnings else "")
    dicom_html = (f'<p>Derived DICOM series (one file per slice): <a href="{escape(dicom_dir)}/">{escape(dicom_dir)}/</a></p>'
                  if dicom_dir else "")
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
<img id="orig" alt="original"> <img id="den" alt="denoised">
<p class="muted">left: original, right: denoised</p>
</div>
<script>
const W={data};const win=document.getElementById('win'),idx=document.getElementById('idx');
W.forEach((w,i)=>win.add(new Option(w.label,i)));
function show(){{const w=W[win.value],i=+idx.value;
document.getElementById('orig').src=w.original[i];document.getElementById('den').src=w.denoised[i];
document.getElementById('lbl').textContent=(i+1)+' / '+w.original.length;}}
win.onchange=show;idx.oninput=show;show();
</script>
<h2>Original against denoised</h2>
{montages}
<h2>Singular values</h2>
{scree}
<h2>Files skipped or failed upstream</h2>
{upstream_html}
</body></html>
"""


def index_page(title: str, entries: list[dict]) -> str:
    """``entries``: [{"name", "href", "facts"}] one per series."""
    items = "\n".join(
        f'<li><a href="{escape(e["href"])}">{escape(e["name"])}</a>: {escape(e["facts"])}</li>' for e in entries)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title><style>{STYLE}</style></head>
<body><h1>{escape(title)}</h1><ul>{items}</ul></body></html>
"""
