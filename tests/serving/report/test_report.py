"""The study report of a real annotated lake: summary counts, table, details, truncation, bad data, CLI."""
from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from click.testing import CliRunner

from speclake.lake.sql import connect
from speclake.serving.report import ReportSettings, StudyNotFound, render_study_report, write_study_report
from tests.serving.report.conftest import MARKUP_TITLE


class Elements(HTMLParser):
    """Counts start tags by (tag, class) and collects ids: what the page is made of."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def count(self, tag: str, cls: str | None = None) -> int:
        return sum(1 for t, a in self.tags if t == tag and (cls is None or cls in a.get("class", "").split()))

    def ids(self) -> set[str]:
        return {a["id"] for _, a in self.tags if "id" in a}


@pytest.fixture(scope="module")
def mb_page(report_lake) -> str:
    return render_study_report(report_lake.root, "mb")


def lake_counts(lake, study: str) -> dict[str, int]:
    con = connect(lake)
    try:
        rank1 = con.sql("SELECT count(*) FROM annotations_top1 WHERE study = ?", params=[study]).fetchall()[0][0]
        errors = con.sql("SELECT count(*) FROM annotation_errors WHERE study = ?", params=[study]).fetchall()[0][0]
        scans = con.sql("SELECT sum(n_scans) FROM annotation_files WHERE study = ?", params=[study]).fetchall()[0][0]
        identity = con.sql("SELECT count(*) FROM annotations_top1 WHERE study = ? AND library_spectrum_id IS NOT NULL",
                           params=[study]).fetchall()[0][0]
    finally:
        con.close()
    return {"rank1": rank1, "errors": errors, "scans": scans, "with_library": identity}


def test_report_shows_every_rank1_row_with_plots_structures_and_trees(report_lake, mb_page):
    """Table rows = rank-1 rows of the lake; each row has a detail section with a mirror plot (matched peaks
    highlighted where a library spectrum exists), a structure drawing and a fragmentation tree."""
    counts = lake_counts(report_lake.root, "mb")
    page = Elements(mb_page)
    assert counts["errors"] == 4 and counts["scans"] == 18 and counts["rank1"] == 14, "fixture: 18 scans, 4 bad"
    rows = re.search(r'<tbody>(.*?)</tbody>', mb_page, re.S).group(1)
    assert rows.count("<tr") == counts["rank1"]
    assert page.count("section", "detail") == counts["rank1"]
    assert page.count("svg", "mirror") == counts["rank1"] - 1, "the deleted file's scan has no peaks to plot"
    assert counts["with_library"] >= 10
    assert page.count("line", "matched") >= 2 * counts["with_library"], "query and library side highlighted"
    assert page.count("svg", "structure") >= counts["rank1"] - 1
    assert page.count("ul", "tree") >= 10
    assert "Fragmentation tree" in mb_page and "identity match" in mb_page
    assert "<script src" not in mb_page and "http://" not in mb_page.replace("http://www.w3.org", "") \
        .replace("http://www.rdkit.org", ""), "self-contained: nothing fetched at view time"
    assert "Per-peak attributions: none available" in mb_page


def test_summary_counts_match_the_lake(report_lake, mb_page):
    """Files, scans, annotated, errors, and the errors-by-reason codes of the lake are on the page."""
    counts = lake_counts(report_lake.root, "mb")
    cards = dict((label, int(n)) for n, label in
                 re.findall(r'<div class="card"><b>(\d+)</b>([^<]+)</div>', mb_page))
    assert cards["files"] == 3 and cards["scans"] == counts["scans"] and cards["errors"] == counts["errors"]
    assert cards["annotated"] + cards["no candidates"] + cards["errors"] == counts["scans"]
    assert cards["confidence &ge; 0.5"] == 0, "no fitted ranker in this lake: no confidence"
    for code in ("no_peaks", "unknown_ionmode"):
        assert f"<code>{code}</code>" in mb_page


def test_query_ids_are_escaped(mb_page):
    """A TITLE that is markup is shown as text: no element of the page comes from it."""
    assert "injected" not in Elements(mb_page).ids()
    assert "&lt;b id=&#x27;injected&#x27;&gt;scan &amp; 1&lt;/b&gt;" in mb_page
    assert MARKUP_TITLE not in mb_page


def test_moved_study_file_is_named_not_fatal(report_lake, mb_page):
    """A study file moved since annotation: the page names it instead of a plot; with its new folder as a
    study dir its peaks are plotted again; a different file of the same name is refused by sha256."""
    assert f"the study file {report_lake.moved_from} is not found from here" in mb_page
    folder = str(report_lake.moved_file.parent)
    found = render_study_report(report_lake.root, "mb", settings=ReportSettings(study_dirs=(folder,)))
    assert "is not found from here" not in found
    assert Elements(found).count("svg", "mirror") == Elements(mb_page).count("svg", "mirror") + 1
    other = report_lake.moved_file.parent.parent / "other"
    other.mkdir(exist_ok=True)
    (other / report_lake.moved_file.name).write_text("BEGIN IONS\nTITLE=moved scan\nEND IONS\n")
    changed = render_study_report(report_lake.root, "mb", settings=ReportSettings(study_dirs=(str(other),)))
    assert "differs from the file annotated (sha256)" in changed


def test_details_are_limited_and_the_page_says_so(report_lake, tmp_path):
    """limit=2: two detail sections (most confident first), every row still in the table, a note says so."""
    path = write_study_report(report_lake.root, "mb", tmp_path / "sub" / "mb.html", limit=2)
    text = path.read_text()
    page = Elements(text)
    assert page.count("section", "detail") == 2
    assert re.search(r'<tbody>(.*?)</tbody>', text, re.S).group(1).count("<tr") == 14
    assert "Details of the first 2 of 14 rank-1 rows" in text
    with pytest.raises(ValueError):
        render_study_report(report_lake.root, "mb", limit=-1)
    few = render_study_report(report_lake.root, "mb", limit=1, settings=ReportSettings(max_rows=5))
    assert re.search(r'<tbody>(.*?)</tbody>', few, re.S).group(1).count("<tr") == 5
    assert "The table lists the 5 most confident of 14 rank-1 rows" in few


def test_study_with_only_errors_renders(report_lake):
    """Every scan of study 'broken' failed: the page renders its error rows and an empty table."""
    text = render_study_report(report_lake.root, "broken")
    assert re.search(r'<tbody>(.*?)</tbody>', text, re.S).group(1) == ""
    assert "<h2>Errors (4)</h2>" in text and "<h2>Rank-1 annotations (0)</h2>" in text
    assert re.search(r'<div class="card"><b>0</b>annotated</div>', text)
    for code in ("no_peaks", "unknown_ionmode"):
        assert f"<code>{code}</code>" in text
    assert Elements(text).count("section", "detail") == 0


def test_unknown_study_is_a_clear_error(report_lake, sample_spectra_lake, tmp_path):
    """An unknown study raises StudyNotFound naming the lake's studies (or saying none was annotated);
    the CLI exits 1 with that line and writes nothing."""
    with pytest.raises(StudyNotFound, match=r"none \(run `speclake annotate` first\)"):
        render_study_report(sample_spectra_lake, "beer")
    with pytest.raises(StudyNotFound, match=r"no study 'nope'.*studies there: broken, mb, scored"):
        render_study_report(report_lake.root, "nope")
    from speclake.cli import main

    result = CliRunner().invoke(main, ["report", "--study", "nope", "--lake", str(report_lake.root),
                                       "--out", str(tmp_path / "x.html")])
    assert result.exit_code == 1 and "no study 'nope'" in result.output
    assert not (tmp_path / "x.html").exists()


def test_cli_writes_the_report(report_lake, tmp_path):
    """`speclake report --study mb --lake DIR --out FILE --details 3` writes the page and says where."""
    from speclake.cli import main

    out = tmp_path / "mb.html"
    result = CliRunner().invoke(main, ["report", "--study", "mb", "--lake", str(report_lake.root), "--out", str(out),
                                       "--details", "3"])
    assert result.exit_code == 0, result.output
    assert f"written to {out}" in result.output
    assert Elements(out.read_text()).count("section", "detail") == 3


def test_ranker_with_a_model_gives_confidences_and_per_peak_attributions(report_lake):
    """Study 'scored' (a ranker using a registered arch1 model): confidence cards count the calibrated
    rank-1 rows, and each detail has attributions of its candidate, drawn on the mirror plot's m/z axis
    (the sticks sum to the log-likelihood difference: delta printed small)."""
    from tests.serving.report.conftest import MODEL_ID, RANKER_ID

    con = connect(report_lake.root)
    try:
        confident = con.sql("SELECT count(*) FILTER (WHERE confidence >= 0.5), count(*) FROM annotations_top1 "
                            "WHERE study = 'scored'").fetchall()[0]
        methods = {r[0] for r in con.sql("SELECT DISTINCT method FROM annotations WHERE study = 'scored'").fetchall()}
    finally:
        con.close()
    assert methods == {RANKER_ID} and confident[1] == 12
    text = render_study_report(report_lake.root, "scored")
    page = Elements(text)
    assert re.search(rf'<div class="card"><b>{confident[0]}</b>confidence &ge; 0.5</div>', text)
    assert "No calibrated confidence" not in text
    assert page.count("svg", "attribution") == 12 and page.count("line", "attr") > 12
    deltas = [float(d) for d in re.findall(r"completeness delta (-?[0-9.e+-]+)\)", text)]
    assert len(deltas) == 12 and max(abs(d) for d in deltas) < 1e-2
    assert f"model {MODEL_ID}: integrated gradients" in text
    few = render_study_report(report_lake.root, "scored", settings=ReportSettings(attributions=3))
    assert Elements(few).count("svg", "attribution") == 3
    assert few.count("not computed: attributions are given to the 3 most confident annotations") == 9
    budget = render_study_report(report_lake.root, "scored", settings=ReportSettings(attribution_seconds=1e-9))
    assert Elements(budget).count("svg", "attribution") == 1, "the first one is started, then the time is up"
    assert budget.count("not computed: the attributions of this report took their 1e-09 s") == 11


def test_models_are_loaded_once_and_only_when_explainable(report_lake, tmp_path):
    """A server renders many reports: the registered model is loaded once; an unknown model id is None."""
    from speclake.serving.report.attribution import load_explainable
    from tests.serving.report.conftest import MODEL_ID

    first = load_explainable(report_lake.root, MODEL_ID)
    assert first is not None and first.arch == "arch1"
    assert load_explainable(report_lake.root, MODEL_ID) is first
    assert load_explainable(report_lake.root, "arch5-not-registered") is None
