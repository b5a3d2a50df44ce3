"""One self-contained HTML page from plain data: findings, tables, figures, sections, provenance.

`build_page` knows nothing about evaluation protocols: the evaluation report, the cohort runner's
subject and cohort pages and any later section (alignment shifts, before/after agreement) all pass
plain dicts and lists. Everything is embedded (PNG as data URIs, CSS and a little plain JavaScript),
so the page works offline, from a mail attachment, with no CDN.

Plain data accepted:

- findings: list of {"sentence": str, "warning": str, "verdict": "better" | "none" | "worse" | ""}
- tables: list of {"id", "title", "caption", "columns": [{"label", "title"}], "rows": [{"name", "colour",
  "cells": [{"text", "value", "best", "near"}], "details": [{"name", "cells": [...]}]}], "notes": [str]}
  (a row's details are shown under it when its name is clicked; every column header sorts the table)
- sections: list of {"title", "caption", "alt", "png": bytes | path, "html": str, "id"}: a figure
  (png with alt text and caption) or a trusted HTML fragment (e.g. `scroller_html`), in order
- provenance: the dict of `cardiorecon.report.provenance.collect`
- failures: list of {"case", "error"}
- links: list of (text, relative href), e.g. ("results.csv", "results.csv")
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1200px;margin:0 auto;
 padding:0 16px 48px;color:#1a1a1a;line-height:1.45}
h1{font-size:1.5em;margin:.8em 0 .3em}h2{font-size:1.2em;margin:1.6em 0 .4em;border-bottom:1px solid #ddd}
h3{font-size:1.05em;margin:1.1em 0 .3em}
.box{border:1px solid #9bb;border-radius:6px;padding:.6em 1em;margin:1em 0;background:#f5fafa}
.box.fail{border-color:#c66;background:#fff4f4}
.findings li{margin:.35em 0}.findings .warn{color:#8a5a00;font-size:.92em}
.findings p.warn{font-size:1em;font-weight:500}
.verdict{display:inline-block;min-width:1.2em;font-weight:bold}
.scrollx{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:13px;margin:.3em 0}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right;white-space:nowrap;vertical-align:top}
th{background:#eef2f2}th:first-child,td:first-child{text-align:left}
th button{font:inherit;font-weight:bold;border:0;background:none;cursor:pointer;padding:0;color:inherit}
th[aria-sort=ascending] button::after{content:" \\25B2"}th[aria-sort=descending] button::after{content:" \\25BC"}
td.best{font-weight:bold}td.near{background:#e3f0ff}
tr.detail td{background:#fafafa;color:#444;font-size:12px}tr.detail td:first-child{padding-left:1.6em}
button.expand{font:inherit;border:0;background:none;cursor:pointer;padding:0;text-align:left}
.swatch{display:inline-block;width:.8em;height:.8em;border-radius:2px;margin-right:.35em;vertical-align:baseline}
figure{margin:1em 0}figure img{max-width:100%;height:auto;display:block;border:1px solid #eee}
figcaption{font-size:.92em;color:#333;margin-top:.3em;max-width:900px}
.note{font-size:.9em;color:#444}
dl.prov{display:grid;grid-template-columns:fit-content(10em) 1fr;gap:.2em 1em;margin:.5em 0}
dl.prov dt{font-weight:bold}dl.prov dd{margin:0;overflow-wrap:anywhere}
code{background:#f2f2f2;padding:0 3px;border-radius:3px;overflow-wrap:anywhere}
.scroller .controls{display:flex;flex-wrap:wrap;gap:.4em 1.2em;align-items:center;margin:.4em 0}
.scroller .heads{display:grid;text-align:center;font-size:12px;font-weight:bold}
.scroller img{width:100%;height:auto;image-rendering:pixelated;display:block}
@media (max-width:700px){body{padding:0 8px}table{font-size:12px}}
"""

JS = """
(function(){
 function key(tb, col){var c=tb.rows[0].cells[col];var v=c.getAttribute('data-v');
  if(v===null||v===''){return {n:NaN,s:c.textContent.trim()};}return {n:parseFloat(v),s:v};}
 document.querySelectorAll('table.sortable').forEach(function(tbl){
  var ths=tbl.tHead.rows[0].cells;
  Array.prototype.forEach.call(ths,function(th,col){
   var b=th.querySelector('button');if(!b){return;}
   b.addEventListener('click',function(){
    var asc=th.getAttribute('aria-sort')!=='ascending';
    Array.prototype.forEach.call(ths,function(o){o.removeAttribute('aria-sort');});
    th.setAttribute('aria-sort',asc?'ascending':'descending');
    var bodies=Array.prototype.slice.call(tbl.tBodies);
    bodies.sort(function(a,b2){var x=key(a,col),y=key(b2,col);
     if(isNaN(x.n)&&isNaN(y.n)){return asc?x.s.localeCompare(y.s):y.s.localeCompare(x.s);}
     if(isNaN(x.n)){return 1;}if(isNaN(y.n)){return -1;}return asc?x.n-y.n:y.n-x.n;});
    bodies.forEach(function(tb){tbl.appendChild(tb);});
   });
  });
 });
 document.querySelectorAll('button.expand').forEach(function(b){
  b.addEventListener('click',function(){
   var open=b.getAttribute('aria-expanded')!=='true';b.setAttribute('aria-expanded',open?'true':'false');
   b.querySelector('.tri').textContent=open?'\\u25BE':'\\u25B8';
   var rows=b.closest('tbody').querySelectorAll('tr.detail');
   Array.prototype.forEach.call(rows,function(r){r.hidden=!open;});
  });
 });
 document.querySelectorAll('.scroller').forEach(function(sc){
  var data=JSON.parse(sc.querySelector('script[type="application/json"]').textContent);
  var cs=sc.querySelector('select.case'),fr=sc.querySelector('input.frame'),sl=sc.querySelector('input.slice');
  var img=sc.querySelector('img'),lab=sc.querySelector('.where');
  function show(){var c=data.cases[cs.value];fr.max=c.frames.length-1;sl.max=c.slices.length-1;
   if(+fr.value>c.frames.length-1){fr.value=0;}if(+sl.value>c.slices.length-1){sl.value=0;}
   var f=c.frames[+fr.value],s=c.slices[+sl.value];
   img.src='data:image/png;base64,'+c.png[fr.value+':'+sl.value];
   var t=cs.value+', frame '+f+', slice '+s;lab.textContent=t;
   img.alt=t+': '+data.alt;}
  cs.addEventListener('change',show);fr.addEventListener('input',show);sl.addEventListener('input',show);
  show();
 });
})();
"""


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def png_uri(png: bytes | str | Path) -> str:
    data = png if isinstance(png, bytes) else Path(png).read_bytes()
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _findings_html(findings: list[dict], headline: str, warning: str = "") -> str:
    if not findings and not headline:
        return ""
    marks = {"better": ("&#9650;", "#1a7f37", "a method is better than the reference"),
             "worse": ("&#9660;", "#b42318", "the reference is better"),
             "none": ("=", "#555", "no method distinguishable from the reference"),
             "untested": ("?", "#8a5a00", "too few paired values to tell")}
    items = []
    for f in findings:
        sym, colour, title = marks.get(f.get("verdict", ""), ("&#8226;", "#555", ""))
        warn = f"<br><span class='warn'>&#9888; {esc(f['warning'])}</span>" if f.get("warning") else ""
        items.append(f"<li><span class='verdict' style='color:{colour}' title='{esc(title)}'>{sym}</span> "
                     f"{esc(f['sentence'])}{warn}</li>")
    lead = (f"<p>{esc(headline)}</p>" if headline else "") + \
        (f"<p class='warn'>&#9888; {esc(warning)}</p>" if warning else "")
    return (f"<section class='box findings' aria-labelledby='findings-h'><h2 id='findings-h' style='border:0;"
            f"margin-top:.2em'>Findings</h2>{lead}<ul>{''.join(items)}</ul></section>")


def _cell(c: dict, tag: str = "td") -> str:
    cls = " ".join(k for k in ("best", "near") if c.get("best" if k == "best" else "near"))
    v = c.get("value")
    dv = "" if v is None or v != v else f" data-v='{v:.6g}'"  # v != v: NaN
    title = f" title='{esc(c['title'])}'" if c.get("title") else ""
    if c.get("wrap"):
        title += " style='white-space:normal;text-align:left;min-width:16em'"
    body = c["html"] if "html" in c else esc(c.get("text", ""))  # "html": a trusted fragment (report/qc_page.py)
    return f"<{tag}{(' class=' + repr(cls)) if cls else ''}{dv}{title}>{body}</{tag}>"


def table_html(t: dict) -> str:
    """A sortable table (one <tbody> per row, holding its hidden per-case detail rows)."""
    cols = t["columns"]
    head = "".join(f"<th scope='col'{' title=' + repr(esc(c['title'])) if c.get('title') else ''}>"
                   f"<button type='button'>{esc(c['label'])}</button></th>" for c in cols)
    bodies = []
    for r in t["rows"]:
        sw = f"<span class='swatch' style='background:{esc(r['colour'])}' aria-hidden='true'></span>" \
            if r.get("colour") else ""
        details = r.get("details") or []
        name = (f"<button type='button' class='expand' aria-expanded='false' title='per case'>"
                f"<span class='tri'>&#9656;</span> {sw}{esc(r['name'])}</button>") if details else f"{sw}{esc(r['name'])}"
        cells = "".join(_cell(c) for c in r["cells"])
        rows = [f"<tr><td data-v='{esc(r.get('key', r['name']))}'>{name}</td>{cells}</tr>"]
        for d in details:
            rows.append(f"<tr class='detail' hidden><td>{esc(d['name'])}</td>"
                        + "".join(_cell(c) for c in d["cells"]) + "</tr>")
        bodies.append("<tbody>" + "".join(rows) + "</tbody>")
    tid = f" id='{esc(t['id'])}'" if t.get("id") else ""
    caption = f"<caption class='note' style='caption-side:bottom;text-align:left'>{esc(t['caption'])}</caption>" \
        if t.get("caption") else ""
    first = esc(t.get("first_column", "method"))
    notes = "".join(f"<p class='note'>{esc(n)}</p>" for n in t.get("notes", []))
    title = f"<h3>{esc(t['title'])}</h3>" if t.get("title") else ""
    return (f"{title}<div class='scrollx'><table class='sortable'{tid}>{caption}<thead><tr><th scope='col'>"
            f"<button type='button'>{first}</button></th>{head}</tr></thead>{''.join(bodies)}</table></div>{notes}")


def _section_html(s: dict) -> str:
    sid = f" id='{esc(s['id'])}'" if s.get("id") else ""
    title = f"<h2{sid}>{esc(s['title'])}</h2>" if s.get("title") else ""
    if s.get("png") is not None:
        alt = s.get("alt") or s.get("caption") or s.get("title") or "figure"
        cap = f"<figcaption>{esc(s['caption'])}</figcaption>" if s.get("caption") else ""
        body = f"<figure><img src='{png_uri(s['png'])}' alt='{esc(alt)}'>{cap}</figure>"
    else:
        cap = f"<p class='note'>{esc(s['caption'])}</p>" if s.get("caption") else ""
        body = (s.get("html") or "") + cap
    return title + body


def _provenance_html(p: dict) -> str:
    if not p:
        return ""
    items = [("Command", f"<code>{esc(p.get('command', ''))}</code>"),
             ("Protocol", esc(p.get("protocol_text") or p.get("protocol") or "")),
             ("Date", esc(p.get("date_utc", ""))),
             ("Version", esc(f"cardiorecon {p.get('version', '?')}, git {p.get('git_commit', '?')}"))]
    m = p.get("machine") or {}
    if m:
        items.append(("Machine", esc(
            f"{m.get('cpu', '?')}, {m.get('cpu_cores', '?')} cores, {m.get('memory_gb', '?')} GB; torch "
            f"{m.get('torch', '?')} with {m.get('torch_threads', '?')} thread(s); GPU: {m.get('gpu', '?')}; "
            f"Python {m.get('python', '?')}, {m.get('os', '?')}. Times and memory are from this machine.")))
    for k, v in p.items():
        if k not in ("command", "protocol", "protocol_text", "date_utc", "version", "git_commit", "machine",
                     "data", "weights"):
            items.append((k.replace("_", " ").capitalize(), esc(v if isinstance(v, str) else json.dumps(v))))
    out = ["<dl class='prov'>" + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"]
    data = p.get("data") or {}
    if data:
        cols = ["layout", "sax_matrix", "pixel_mm", "sax_slices", "slice_spacing_mm", "thickness_mm", "frames",
                "lax_views", "labels"]
        heads = ["layout", "SAX matrix", "pixel mm", "SAX slices", "slice step mm", "thickness mm", "frames",
                 "LAX views", "reference labels"]
        def region(d):
            r = d.get("heart_region")
            if not isinstance(r, dict):
                return ""
            size = r.get("size_mm")
            return f"{size:.0f} mm, from {r.get('source', '?')}" if isinstance(size, (int, float)) else str(r)

        if any(isinstance(d.get("heart_region"), dict) for d in data.values()):
            cols.append("heart_region")
            heads.append("heart region (working grid)")
        rows = "".join("<tr><td>" + esc(case) + "</td>" + "".join(
            f"<td>{esc(', '.join(d.get(c) or []) or 'none' if c == 'lax_views' else ('yes' if d.get(c) else 'no') if c == 'labels' else region(d) if c == 'heart_region' else d.get(c, ''))}</td>"
            for c in cols) + "</tr>" for case, d in data.items())
        out.append("<h3>Data</h3><div class='scrollx'><table><thead><tr><th>case</th>"
                   + "".join(f"<th>{h}</th>" for h in heads) + f"</tr></thead><tbody>{rows}</tbody></table></div>")
    weights = p.get("weights") or []
    if weights:
        rows = "".join(f"<tr><td>{esc(w.get('role', ''))}</td><td>{esc(w.get('name', ''))}</td>"
                       f"<td><code>{esc(w.get('sha256', ''))}</code></td>"
                       f"<td>{esc(format(w['parameters'], ',') if 'parameters' in w else '')}</td>"
                       f"<td>{esc(Path(str(w.get('file', ''))).parent.name + '/' + Path(str(w.get('file', ''))).name)}</td></tr>"
                       for w in weights)
        out.append("<h3>Weights</h3><div class='scrollx'><table><thead><tr><th>used by</th><th>name</th>"
                   "<th>SHA-256 (first 12)</th><th>parameters</th><th>file</th></tr></thead>"
                   f"<tbody>{rows}</tbody></table></div>")
    return "<h2 id='provenance'>Provenance</h2>" + "".join(out)


def _failures_html(failures: list[dict]) -> str:
    if not failures:
        return ""
    rows = "".join(f"<tr><td>{esc(f.get('case', ''))}</td><td style='text-align:left;white-space:normal'>"
                   f"{esc(f.get('error', ''))}</td></tr>" for f in failures)
    return (f"<section class='box fail'><h2 style='border:0;margin-top:.2em'>{len(failures)} case(s) failed</h2>"
            "<p>They are not in the tables or figures below.</p><div class='scrollx'><table><thead><tr><th>case</th>"
            f"<th>error</th></tr></thead><tbody>{rows}</tbody></table></div></section>")


def build_page(title: str, intro: str = "", *, findings: list[dict] | None = None, headline: str = "",
               warning: str = "",
               tables: list[dict] | None = None, sections: list[dict] | None = None,
               provenance: dict | None = None, failures: list[dict] | None = None,
               links: list[tuple[str, str]] | None = None, notes: list[str] | None = None) -> str:
    """The whole page as a string (see the module docstring for the shapes of the arguments)."""
    link_html = " ".join(f"<a href='{esc(h)}'>{esc(t)}</a>" for t, h in (links or []))
    viewer = any("nv-viewer" in (sec.get("html") or "") for sec in (sections or []))  # report/viewer.py
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
             f"<meta http-equiv='Content-Security-Policy' content=\"{_viewer_csp()}\">" if viewer else "",
             "<meta name='viewport' content='width=device-width, initial-scale=1'>",
             f"<title>{esc(title)}</title><style>{CSS}</style></head><body>",
             f"<header><h1>{esc(title)}</h1>" + (f"<p>{esc(intro)}</p>" if intro else "")
             + (f"<p class='note'>Data: {link_html}. Provenance at the <a href='#provenance'>end</a>.</p>"
                if link_html else "") + "</header><main>",
             _findings_html(findings or [], headline, warning), _failures_html(failures or [])]
    if tables:
        parts.append("<h2 id='tables'>Results</h2>")
        parts += [table_html(t) for t in tables]
    parts += [f"<p class='note'>{esc(n)}</p>" for n in (notes or [])]
    parts += [_section_html(s) for s in (sections or [])]
    parts.append(_provenance_html(provenance or {}))
    parts.append(f"</main><script>{JS}</script></body></html>")
    return "\n".join(p for p in parts if p)


#: the Content-Security-Policy of a page with the viewer: nothing outside the file (issue 27)
CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data: blob:; "
       "font-src data:; connect-src data: blob:; worker-src blob:")


def _viewer_csp() -> str:
    return CSP


def scroller_html(cases: dict[str, dict], columns: list[str], colours: dict[str, str] | None = None,
                  alt: str = "", sid: str = "scroller") -> str:
    """A slice and frame scroller: `cases` = {case: {"frames": [...], "slices": [...], "png": {"fi:si":
    PNG bytes}}}, each PNG a strip with one tile per name in `columns` (left to right)."""
    if not cases:
        return ""
    colours = colours or {}
    payload = {"alt": alt, "cases": {c: {"frames": [str(f) for f in d["frames"]], "slices": [str(s) for s in d["slices"]],
                                         "png": {k: base64.b64encode(v).decode() for k, v in d["png"].items()}}
                                     for c, d in cases.items()}}
    blob = json.dumps(payload).replace("</", "<\\/")
    opts = "".join(f"<option>{esc(c)}</option>" for c in cases)
    first = next(iter(cases.values()))
    k0 = next(iter(first["png"]))
    heads = "".join(f"<div style='color:{esc(colours.get(c, '#222'))}'>{esc(c)}</div>" for c in columns)
    return (f"<div class='scroller' id='{esc(sid)}'><div class='controls'>"
            f"<label>case <select class='case'>{opts}</select></label>"
            f"<label>frame <input class='frame' type='range' min='0' max='{len(first['frames']) - 1}' value='0'></label>"
            f"<label>slice <input class='slice' type='range' min='0' max='{len(first['slices']) - 1}' value='0'></label>"
            f"<span class='where note'></span></div>"
            f"<div style='max-width:{180 * len(columns)}px'><div class='heads' style='grid-template-columns:repeat("
            f"{len(columns)},1fr)'>{heads}</div>"
            f"<img src='{png_uri(first['png'][k0])}' alt='{esc(alt)}'></div>"
            f"<script type='application/json'>{blob}</script></div>")
