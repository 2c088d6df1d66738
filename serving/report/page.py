"""The study report page: one self-contained HTML file (inline CSS, JS and SVG; nothing fetched at view time).

Sections: summary (files, scans, confident annotations, methods, errors by reason), the rank-1 table
(click a header to sort, a text box to filter, a minimum confidence), per annotation (the first
``details`` rows, most confident first) a mirror plot, the candidate's structure and its
fragmentation tree; when ``speclake denovo`` ran on the study, its proposal lists (the top proposals of
each scan with their structure drawings, and what the run was given) and, in the summary, its scans
without proposals by reason; then the error rows. A study without de novo rows gets exactly the page
it got before de novo existed. The page's script records any error into ``#js-errors`` and marks
``<body data-report-ready="1">`` once it ran (what the browser test checks).
"""
from __future__ import annotations

import datetime as dt
import functools
import logging
import math
import os
from pathlib import Path
from typing import Any, Callable

from speclake.serving.report.data import (CONFIDENCE_LEVELS, TABLE_COLUMNS, Denovo, DenovoList, Detail,
                                          ReportSettings, StudyData, StudyNotFound, read_study)
from speclake.serving.report.svg import (Peaks, attribution_svg, esc, mirror_plot_svg, mz_range, structure_svg,
                                         tree_formulas, tree_html)

log = logging.getLogger(__name__)

DEFAULT_LIMIT = ReportSettings().details

CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 24px 40px;color:#222}
h1{font-size:22px;margin:18px 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:0 0 6px}.muted{color:#777}.note{color:#8a5a00;background:#fff7e0;padding:4px 8px}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 14px;min-width:110px}
.card b{display:block;font-size:20px}table{border-collapse:collapse;margin:6px 0}
td,th{border:1px solid #e2e2e2;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f4f4f4}table.sortable th{cursor:pointer;user-select:none;white-space:nowrap}
th.asc::after{content:" \\25B2"}th.desc::after{content:" \\25BC"}
td.n{text-align:right;font-variant-numeric:tabular-nums}
#annotations{font-size:13px}#annotations tr:hover td{background:#f6faff}.wrap{max-height:70vh;overflow:auto}
#annotations td{white-space:nowrap;overflow:hidden;text-overflow:ellipsis;max-width:16em}
.controls{display:flex;gap:16px;align-items:center;margin:6px 0}.controls input[type=search]{width:260px}
.detail{border:1px solid #ddd;border-radius:6px;padding:10px;margin:12px 0;display:grid;
grid-template-columns:minmax(0,660px) 270px;gap:8px 16px}.detail .full{grid-column:1/3}
svg.mirror,svg.attribution{max-width:100%;height:auto}
svg .ax,svg .lbl,svg .who{font:10px sans-serif;fill:#333}svg .who{font-weight:bold}
ul.tree{font-size:12px;padding-left:14px;margin:4px 0}ul.tree ul{padding-left:18px;border-left:1px dotted #bbb}
.formula{font-weight:600}.loss{color:#1f77b4}.mz{font-variant-numeric:tabular-nums}
#js-errors{color:#b00}code{font-size:12px}
"""

#: Added to :data:`CSS` only on pages with de novo proposals.
DENOVO_CSS = """
.denovo{border:1px solid #ddd;border-radius:6px;padding:10px;margin:12px 0}
.proposals{display:flex;flex-wrap:wrap;gap:8px}
.proposal{margin:6px 0 0;border:1px solid #e2e2e2;border-radius:4px;padding:4px;width:180px}
.proposal code{display:block;word-break:break-all;font-size:11px}
"""

#: Size of the de novo structure drawings (several per scan: smaller than the annotation's).
DENOVO_DRAWING = {"width": 180, "height": 140}

SCRIPT = """
(function(){
  var errs = document.getElementById('js-errors');
  window.onerror = function(msg, src, line){
    var li = document.createElement('li'); li.textContent = msg + ' (line ' + line + ')'; errs.appendChild(li);
    document.body.setAttribute('data-js-errors', String(errs.children.length));
  };
  var table = document.getElementById('annotations');
  var body = table.tBodies[0];
  var rows = Array.prototype.slice.call(body.rows);
  var text = document.getElementById('filter'), conf = document.getElementById('min-confidence');
  var shown = document.getElementById('shown');
  function value(row, i, kind){
    var cell = row.cells[i], v = cell.getAttribute('data-v');
    if (kind === 'text') return (v === null ? cell.textContent : v).toLowerCase();
    return v === null || v === '' ? null : parseFloat(v);
  }
  function filter(){
    var q = text.value.trim().toLowerCase(), min = parseFloat(conf.value), n = 0;
    rows.forEach(function(r){
      var c = parseFloat(r.getAttribute('data-confidence'));
      var ok = (!q || r.textContent.toLowerCase().indexOf(q) >= 0) && (!(min > 0) || (!isNaN(c) && c >= min));
      r.style.display = ok ? '' : 'none'; if (ok) n++;
    });
    shown.textContent = n + ' of ' + rows.length + ' rows shown';
  }
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function(th, i){
    th.addEventListener('click', function(){
      var kind = th.getAttribute('data-kind') === 'text' ? 'text' : 'num';
      var dir = th.classList.contains('asc') ? -1 : 1;
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function(h){ h.classList.remove('asc', 'desc'); });
      th.classList.add(dir === 1 ? 'asc' : 'desc');
      rows.sort(function(a, b){
        var x = value(a, i, kind), y = value(b, i, kind);
        if (x === null && y === null) return 0; if (x === null) return 1; if (y === null) return -1;
        return (x < y ? -1 : x > y ? 1 : 0) * dir;
      });
      rows.forEach(function(r){ body.appendChild(r); });
    });
  });
  text.addEventListener('input', filter); conf.addEventListener('input', filter);
  filter();
  document.body.setAttribute('data-report-ready', '1');
})();
"""


def _fmt(value: Any, kind: str) -> str:
    """A cell's text for a column kind of :data:`TABLE_COLUMNS`."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if kind == "mz":
        return f"{value:.4f}"
    if kind in ("num1", "num3"):
        return f"{value:.{kind[-1]}f}"
    if kind == "file":
        return Path(str(value)).name
    return str(value)


def _cell(value: Any, kind: str, link: str | None = None) -> str:
    text = esc(_fmt(value, kind))
    if link and text:
        text = f'<a href="#{esc(link)}">{text}</a>'
    if kind == "text" or kind == "file":  # long texts are cut by the CSS: the full one is the tooltip
        title = f' title="{esc(value)}"' if kind == "file" or len(str(value or "")) > 24 else ""
        return f"<td{title}>{text}</td>"
    data = "" if value is None else esc(value)
    return f'<td class="n" data-v="{data}">{text}</td>'


def summary_html(data: StudyData) -> str:
    """Cards with the counts, the files, rows by method and errors by reason code."""
    s = data.summary
    cards = [("files", len(s.files)), ("scans", s.n_scans), ("annotated", s.n_annotated),
             ("no candidates", s.n_no_candidates), ("errors", s.n_errors)]
    cards += [(f"confidence &ge; {t}", s.confident[t]) for t in CONFIDENCE_LEVELS]
    out = ['<div class="cards">' + "".join(f'<div class="card"><b>{v}</b>{k}</div>' for k, v in cards) + "</div>"]
    if s.n_with_confidence == 0 and s.n_annotated:
        out.append('<p class="note">No calibrated confidence in this study: the rows were ranked by '
                   f'{esc(", ".join(m["method"] for m in s.methods))} (fit a ranker with '
                   '<code>speclake annotate-prepare</code> for confidences).</p>')
    out.append("<h3>Files</h3><table><tr><th>File</th><th>Scans</th><th>Annotated</th><th>No candidates</th>"
               "<th>Errors</th><th>Finished (UTC)</th></tr>")
    for f in s.files:
        out.append(f"<tr><td>{esc(f['source_file'])}</td>" + "".join(
            f'<td class="n">{int(f[k])}</td>' for k in ("n_scans", "n_annotated", "n_no_candidates", "n_errors"))
                   + f"<td>{esc(str(f['finished_at'])[:19])}</td></tr>")
    out.append("</table><h3>Rows by method</h3><table><tr><th>Method</th><th>Rank-1 rows</th>"
               "<th>No candidates</th><th>All rows</th></tr>")
    out += [f"<tr><td>{esc(m['method'])}</td><td class='n'>{m['rank1']}</td><td class='n'>{m['no_candidates']}</td>"
            f"<td class='n'>{m['rows']}</td></tr>" for m in s.methods]
    out.append("</table><h3>Errors by reason</h3>")
    out.append(reasons_html(s.reasons) if s.reasons else "<p class='muted'>No scan failed.</p>")
    if data.denovo is not None:
        out.append(denovo_summary_html(data.denovo))
    return "".join(out)


def reasons_html(reasons: list[dict[str, Any]]) -> str:
    """Error rows counted by stage and reason code, with an example reason."""
    return ("<table><tr><th>Stage</th><th>Reason code</th><th>Scans</th><th>Example</th></tr>"
            + "".join(f"<tr><td>{esc(r['stage'])}</td><td><code>{esc(r['reason_code'])}</code></td>"
                      f"<td class='n'>{r['n']}</td><td>{esc(r['example'])}</td></tr>" for r in reasons)
            + "</table>")


def denovo_summary_html(denovo: Denovo) -> str:
    """Cards with the de novo counts and the scans without proposals (``denovo_errors``) by reason code."""
    cards = [("de novo lists", denovo.n_lists), ("de novo proposals", denovo.n_proposals),
             ("de novo errors", denovo.n_errors)]
    return ('<h3>De novo proposals</h3><div class="cards">'
            + "".join(f'<div class="card"><b>{v}</b>{k}</div>' for k, v in cards) + "</div>"
            + "<h3>De novo errors by reason</h3>"
            + (reasons_html(denovo.reasons) if denovo.reasons else "<p class='muted'>Every scan got proposals.</p>"))


def _anchor(i: int) -> str:
    return f"a{i + 1}"


def table_html(data: StudyData) -> str:
    """The sortable, filterable rank-1 table (a row links to its detail section when it has one)."""
    head = "".join(f'<th data-kind="{"text" if kind in ("text", "file") else "num"}">{esc(title)}</th>'
                   for _, title, kind in TABLE_COLUMNS)
    n_details = len(data.details)
    body = []
    for i, row in enumerate(data.rows):
        link = _anchor(i) if i < n_details else None
        cells = "".join(_cell(row.get(col), kind, link if col == "query_id" else None)
                        for col, _, kind in TABLE_COLUMNS)
        conf = row.get("confidence")
        body.append(f'<tr data-confidence="{"" if conf is None else esc(conf)}">{cells}</tr>')
    return ('<div class="controls"><label>Filter <input id="filter" type="search" '
            'placeholder="query id, name, formula, InChIKey ..."></label>'
            '<label>Confidence &ge; <input id="min-confidence" type="number" min="0" max="1" step="0.05" value="0">'
            '</label><span id="shown" class="muted"></span></div>'
            f'<div class="wrap"><table id="annotations" class="sortable"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def detail_html(i: int, d: Detail, tolerance_da: float, drawings: Callable[[str | None], str | None] = structure_svg,
                ) -> str:
    """One annotation: title line, mirror plot, structure (``drawings``: SMILES -> SVG), fragmentation tree,
    attributions."""
    r = d.row
    title = ("no candidate structure" if r.get("status") == "no_candidates" else
             r.get("compound_name") or r.get("formula") or r.get("inchikey") or "")
    conf = r.get("confidence")
    facts = [f"precursor m/z {r['precursor_mz']:.4f}" if r.get("precursor_mz") is not None else None,
             f"{r.get('formula')} {r.get('adduct')}" if r.get("formula") else None,
             f"confidence {conf:.3f}" if conf is not None else "no calibrated confidence",
             f"method {r.get('method')}" if r.get("method") else None,
             f"{r['mass_error_ppm']:+.1f} ppm" if r.get("mass_error_ppm") is not None else None]
    head = (f'<h3 class="full">#{i + 1} <span>{esc(r["query_id"])}</span> &mdash; {esc(title)}</h3>'
            f'<div class="full muted">{esc(" · ".join(f for f in facts if f))}<br>'
            f'{esc(r.get("inchikey") or "")} {esc(r.get("query_usi") or "")}</div>')
    formulas = {}
    if d.tree is not None and d.query_mz is not None:
        formulas = tree_formulas(d.tree, d.query_mz)
    lib = d.library
    if d.query_mz is not None:
        if lib is not None:
            label = (f"library {lib.get('accession') or lib['spectrum_id']} {lib.get('compound_name') or ''} "
                     f"{lib.get('adduct') or ''}").strip()
            lib_peaks = Peaks.of(lib.get("mz"), lib.get("intensities"), label)
        else:
            lib_peaks = None
        plot = mirror_plot_svg(Peaks.of(d.query_mz, d.query_intensities, f"query {r['query_id']}"), lib_peaks,
                               tolerance_da=tolerance_da, precursor_mz=r.get("precursor_mz"), formulas=formulas)
        if lib is None:
            plot += '<div class="muted">No library spectrum of this structure: the query alone.</div>'
        else:
            scores = [f"{k} {r[c]:.3f}" for k, c in (("entropy", "library_entropy"), ("cosine", "library_cosine"),
                                                      ("modified cosine", "library_modified_cosine"))
                      if r.get(c) is not None]
            plot += (f'<div class="muted">{esc(r.get("library_match") or "")} match · '
                     f'{esc(", ".join(scores))} · matched within {tolerance_da:g} Da · '
                     f'{esc(lib.get("source") or "")} {esc(r.get("library_usi") or "")}</div>')
    else:
        plot = f'<p class="note">{esc(d.query_note)}</p>'
    drawing = drawings(r.get("smiles")) if r.get("status") == "annotated" else None
    structure = (drawing + f'<div class="muted"><code>{esc(r.get("smiles"))}</code></div>') if drawing else \
        f'<p class="muted">{"no structure drawing" if not r.get("smiles") else "SMILES does not parse"}</p>'
    if d.tree is not None:
        tree = (f'<div class="full"><b>Fragmentation tree</b> <span class="muted">{esc(d.tree.ion_formula)}, '
                f'score {d.tree.score:.2f}, {len(d.tree.nodes) - 1} fragment peaks explained '
                f'({100 * d.tree.explained_intensity:.0f}% of the intensity)</span>{tree_html(d.tree)}</div>')
    else:
        tree = f'<div class="full muted">{esc(d.tree_note)}</div>'
    if d.attribution is not None:
        top = ", ".join(f"{m:.4f} ({v:+.2g})" for m, v in d.attribution.top(5))
        axis = mz_range(d.query_mz, lib.get("mz") if lib else None,
                        [r["precursor_mz"]] if r.get("precursor_mz") else None)
        attributions = (f'<div class="full"><b>Per-peak attributions</b> <span class="muted">'
                        f'{esc(d.attribution_note)}; strongest: {esc(top)}</span></div><div class="full">'
                        + attribution_svg(d.attribution.mz, d.attribution.attributions, axis=axis,
                                          label=f"attribution per peak (up: supports this structure), "
                                                f"model {d.attribution.model_id}")
                        + "</div>")
    else:
        attributions = (f'<div class="full muted">Per-peak attributions: '
                        f'{esc(d.attribution_note or "none available for this row")}</div>')
    return (f'<section class="detail" id="{_anchor(i)}">{head}<div>{plot}</div><div>{structure}</div>'
            f"{tree}{attributions}</section>")


def denovo_list_html(i: int, d: DenovoList, drawings: Callable[[str | None], str | None]) -> str:
    """One scan's de novo proposals: what the run was given, then side by side each proposal's rank, formula,
    score, drawing and SMILES."""
    target = (f"target formula {d.target_formula} ({d.formula_source or 'source not recorded'})" if d.target_formula
              else "no formula filter")
    facts = [f"precursor m/z {d.precursor_mz:.4f}" if d.precursor_mz is not None else None, f"model {d.model_id}",
             f"method {d.method}", target, f"run {d.run_id}"]
    near = (f"near <code>{esc(d.near_smiles)}</code>" if d.near_smiles else "free generation (no --near parent)")
    cards = []
    for p in d.proposals:
        drawing = drawings(p.get("smiles")) or "<p class='muted'>SMILES does not parse</p>"
        cards.append(f'<figure class="proposal" data-rank="{esc(p["rank"])}"><figcaption><b>#{esc(p["rank"])}</b> '
                     f'{esc(p.get("formula") or "")} · score {esc(_fmt(p.get("score"), "num3"))}</figcaption>'
                     f'{drawing}<code>{esc(p.get("smiles"))}</code></figure>')
    return (f'<section class="denovo" id="denovo-{i + 1}"><h3>{esc(d.query_id)} '
            f'<span class="muted" title="{esc(d.source_file)}">{esc(Path(d.source_file).name)}</span></h3>'
            f'<div class="muted">{esc(" · ".join(f for f in facts if f))} · {near}</div>'
            f'<div class="proposals">{"".join(cards)}</div></section>')


def denovo_html(denovo: Denovo, top: int, drawings: Callable[[str | None], str | None]) -> str:
    """The de novo section: the first proposal lists (says so when there are more)."""
    shown = len(denovo.lists)
    if denovo.n_lists == 0:
        note = "<p class='muted'>No scan got de novo proposals: the summary counts why.</p>"
    elif shown < denovo.n_lists:
        note = (f"<p class='note'>The top {top} proposals of the first {shown} of {denovo.n_lists} lists (one per "
                "scan and run, by file and query id); <code>speclake export denovo</code> writes them all.</p>")
    else:
        note = f"<p class='muted'>The top {top} proposals of each scan and run.</p>"
    return (f"<h2>De novo proposals ({denovo.n_lists})</h2>{note}"
            + "".join(denovo_list_html(i, d, drawings) for i, d in enumerate(denovo.lists)))


def errors_html(data: StudyData) -> str:
    """The error rows (at most ``max_errors``; says so when more exist)."""
    if not data.errors:
        return "<p class='muted'>No error rows.</p>"
    rows = "".join(f"<tr><td>{esc(Path(e['source_file']).name)}</td><td>{esc(e['query_id'])}</td>"
                   f"<td>{esc(e['record_locator'])}</td><td>{esc(e['stage'])}</td>"
                   f"<td><code>{esc(e['reason_code'])}</code></td><td>{esc(e['reason'])}</td></tr>"
                   for e in data.errors)
    more = data.summary.n_errors - len(data.errors)
    note = (f"<p class='note'>{more} more error rows not listed (see the annotation_errors table).</p>"
            if more > 0 else "")
    return (f"<table><tr><th>File</th><th>Query id</th><th>Record</th><th>Stage</th><th>Reason code</th>"
            f"<th>Reason</th></tr>{rows}</table>{note}")


def page_html(data: StudyData, settings: ReportSettings) -> str:
    """The whole page."""
    from speclake import __version__

    n_rows, n_details = len(data.rows), len(data.details)
    n_all = data.summary.n_annotated + data.summary.n_no_candidates
    if n_rows < n_all:
        table_note = (f"<p class='note'>The table lists the {n_rows} most confident of {n_all} rank-1 rows; "
                      "<code>speclake export annotations --rank1</code> writes them all.</p>")
    else:
        table_note = ""
    if n_details < n_rows:
        truncated = (f"<p class='note'>Details of the first {n_details} of {n_rows} rank-1 rows (most confident "
                     "first) to keep this file small; <code>speclake report --details N</code> shows more.</p>")
    else:
        truncated = ""
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    drawings = functools.lru_cache(maxsize=None)(structure_svg)  # a structure drawn once per page
    details = "".join(detail_html(i, d, settings.tolerance_da, drawings) for i, d in enumerate(data.details))
    css, denovo = CSS, ""
    if data.denovo is not None:
        css += DENOVO_CSS
        small = functools.lru_cache(maxsize=None)(functools.partial(structure_svg, **DENOVO_DRAWING))
        denovo = denovo_html(data.denovo, settings.denovo_top, small)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(f'Study {data.study} - speclake report')}</title><style>{css}</style></head>"
            f'<body data-report-ready="0" data-js-errors="0">'
            f"<h1>Study {esc(data.study)}</h1><div class='muted'>lake {esc(data.lake)} · generated {now} by speclake "
            f"{esc(__version__)}</div><ul id='js-errors'></ul>"
            f"<h2>Summary</h2>{summary_html(data)}"
            f"<h2>Rank-1 annotations ({n_all})</h2>{table_note}{table_html(data)}"
            f"<h2>Annotations in detail ({n_details})</h2>{truncated}{details}{denovo}"
            f"<h2>Errors ({data.summary.n_errors})</h2>{errors_html(data)}"
            f"<script>{SCRIPT}</script></body></html>")


def render_study_report(lake: str | os.PathLike[str], study: str, *, limit: int | None = DEFAULT_LIMIT,
                        settings: ReportSettings | None = None) -> str:
    """The complete, self-contained HTML report of ``study``.

    ``limit``: rank-1 annotations drawn in detail (most confident first; None: every one); the table
    always lists them all. Raises :class:`StudyNotFound` (a ValueError naming the lake's studies)
    for a study the lake does not have.
    """
    settings = ReportSettings(**{**(settings or ReportSettings()).model_dump(), "details": limit})
    return page_html(read_study(lake, study, settings), settings)


def write_study_report(lake: str | os.PathLike[str], study: str, out: str | os.PathLike[str], *,
                       limit: int | None = DEFAULT_LIMIT, settings: ReportSettings | None = None) -> Path:
    """Write the report of ``study`` to ``out`` (parent folders made); returns the path."""
    text = render_study_report(lake, study, limit=limit, settings=settings)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    log.info("wrote %s (%d bytes)", path, len(text.encode()))
    return path


__all__ = ["DEFAULT_LIMIT", "StudyNotFound", "render_study_report", "write_study_report"]
