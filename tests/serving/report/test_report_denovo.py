"""The study report's de novo part, over real denovo_candidates / denovo_errors rows committed through the run
contract: the proposal lists with drawings, the errors by reason in the summary, the cap, a de novo-only study,
and a study without de novo rows rendered exactly as before."""
from __future__ import annotations

import re
import shutil

import pytest

from speclake.serving.report import ReportSettings, StudyNotFound, render_study_report, write_study_report
from tests.serving.report.browser import Chromium, chromium_binary
from tests.serving.report.conftest import MARKUP_TITLE
from tests.serving.report.test_report import Elements
from tests.training.denovo.rows import MODEL_ID, error, proposals, write_denovo_run

CAFFEINE = "CN1C=NC2=C1C(=O)N(C(=O)N2C)C"
FREE = [CAFFEINE, "CC(=O)Oc1ccccc1C(=O)O", "c1ccccc1O", "CCOC(=O)c1ccccc1", "Cc1ccccc1N", "OC(=O)CCc1ccccc1",
        "CCN(CC)CC"]
NEAR = ["Cn1c2nc[nH]c2c(=O)n(C)c1=O", "Cn1cnc2c1c(=O)[nH]c(=O)n2C", "Cn1cnc2c1c(=O)n(C)c(=O)[nH]2"]
UNPARSABLE = "C1CC(=O"


@pytest.fixture(scope="module")
def denovo_lake(report_lake, tmp_path_factory):
    """A copy of the report lake where ``speclake denovo`` ran on three scans of study 'mb' (7 proposals for the
    markup-titled scan, 3 for two others; errors 2 no_proposals + 1 no_peaks) and again --near caffeine on one
    of them; study 'novo' has only de novo rows (2 scans, one proposal unparsable, 1 error); study 'novo_failed'
    only denovo_errors."""
    dst = tmp_path_factory.mktemp("report-denovo") / "lake"
    shutil.copytree(report_lake.root, dst, ignore=shutil.ignore_patterns("_staging"))
    mb = report_lake.study_files[0]
    rows = (proposals(mb, MARKUP_TITLE, FREE, precursor_mz=195.0877, target_formula="C8H10N4O2",
                      formula_source="fragtree")
            + proposals(mb, "mb scan 2", FREE[1:4]) + proposals(mb, "mb scan 3", FREE[4:]))
    errors = [error(mb, "mb scan 4", "no_proposals", "none of 1000 decoded structures has formula C9H9N"),
              error(mb, "mb scan 5", "no_proposals", "none of 1000 decoded structures has formula C7H7"),
              error(mb, "bad 1", "no_peaks", "no peaks after cleaning", stage="normalize")]
    write_denovo_run(dst, "mb", rows[::-1], errors)
    write_denovo_run(dst, "mb", proposals(mb, "mb scan 2", NEAR, near=CAFFEINE, target_formula="C7H8N4O2",
                                          formula_source="given"))
    write_denovo_run(dst, "novo", proposals("/elsewhere/unknowns.mgf", "u 1", [FREE[0], UNPARSABLE])
                     + proposals("/elsewhere/unknowns.mgf", "u 2", FREE[:2]),
                     [error("/elsewhere/unknowns.mgf", "u 3", "no_proposals", "no structure decoded")])
    write_denovo_run(dst, "novo_failed", [], [error("/elsewhere/bad.mgf", None, "unreadable_file", "not an MGF",
                                                    stage="read")])
    return dst


@pytest.fixture(scope="module")
def mb_denovo_page(denovo_lake) -> str:
    return render_study_report(denovo_lake, "mb")


def denovo_sections(text: str) -> list[str]:
    return re.findall(r'<section class="denovo" id="denovo-\d+">(.*?)</section>', text, re.S)


def normalized(text: str, lake) -> str:
    """The page without what differs between two renderings of the same data: the time and the lake path."""
    return re.sub(r"generated [0-9-]+ [0-9:]+ UTC", "generated -", text).replace(str(lake), "LAKE")


def test_denovo_section_lists_the_top_proposals_with_drawings(report_lake, denovo_lake, mb_denovo_page):
    """One section per scan and run (4), by file and query id; at most 5 proposals each in rank order with a
    structure drawing, SMILES, formula and score; the run's model, method, target formula + source and parent."""
    page = mb_denovo_page
    assert "<h2>De novo proposals (4)</h2>" in page
    sections = denovo_sections(page)
    assert len(sections) == 4
    ranks = [re.findall(r'<figure class="proposal" data-rank="(\d+)">', s) for s in sections]
    assert ranks[0] == ["1", "2", "3", "4", "5"], "7 proposals: the top 5, best first"
    assert sorted(len(r) for r in ranks[1:]) == [3, 3, 3]
    assert all(s.count('<svg class="structure"') == len(r) for s, r in zip(sections, ranks)), "a drawing per row"
    without = render_study_report(report_lake.root, "mb")
    drawn = Elements(page).count("svg", "structure") - Elements(without).count("svg", "structure")
    assert drawn == 14, "5 + 3 + 3 + 3 drawings added to the annotation page"
    first = sections[0]
    assert f"model {MODEL_ID}" in first and "method latent_likelihood" in first
    assert "target formula C8H10N4O2 (fragtree)" in first and "precursor m/z 195.0877" in first
    assert f"<b>#1</b> C8H10N4O2 · score -1.500</figcaption><svg" in first and f"<code>{CAFFEINE}</code>" in first
    assert f"<code>{FREE[5]}</code>" not in first, "rank 6 is not shown"
    near = next(s for s in sections if "near <code>" in s)
    assert f"near <code>{CAFFEINE}</code>" in near and "target formula C7H8N4O2 (given)" in near
    assert sum("free generation" in s for s in sections) == 3
    assert "The top 5 proposals of each scan and run." in page


def test_denovo_query_ids_are_escaped(mb_denovo_page):
    """The markup TITLE heads the first de novo list as text: no element comes from it."""
    first = denovo_sections(mb_denovo_page)[0]
    assert first.startswith("<h3>&lt;b id=&#x27;injected&#x27;&gt;scan &amp; 1&lt;/b&gt; ")
    assert "injected" not in Elements(mb_denovo_page).ids() and MARKUP_TITLE not in mb_denovo_page


def cards(text: str) -> dict[str, int]:
    return {label: int(n) for n, label in re.findall(r'<div class="card"><b>(\d+)</b>([^<]+)</div>', text)}


def test_summary_counts_denovo_errors_by_reason(report_lake, mb_denovo_page):
    """The summary adds de novo cards (lists, proposals, errors = the lake's rows) and the denovo_errors rows
    counted by stage and reason code; the annotation cards are those of the study without de novo rows."""
    found = cards(mb_denovo_page)
    assert found.pop("de novo lists") == 4 and found.pop("de novo proposals") == 7 + 3 + 3 + 3
    assert found.pop("de novo errors") == 3
    assert found == cards(render_study_report(report_lake.root, "mb")), "annotation counts unchanged"
    reasons = mb_denovo_page.split("<h3>De novo errors by reason</h3>")[1].split("</table>")[0]
    assert "<td>denovo</td><td><code>no_proposals</code></td><td class='n'>2</td>" in reasons
    assert "<td>normalize</td><td><code>no_peaks</code></td><td class='n'>1</td>" in reasons


def test_a_study_without_denovo_rows_renders_exactly_as_before(report_lake, denovo_lake):
    """Studies 'broken' and 'scored' have no de novo rows: their pages in the lake with de novo rows of other
    studies equal their pages in the lake without any (time and lake path aside), with no de novo text or CSS."""
    for study in ("broken", "scored"):
        before = render_study_report(report_lake.root, study)
        after = render_study_report(denovo_lake, study)
        assert normalized(after, denovo_lake) == normalized(before, report_lake.root)
        assert "De novo" not in normalized(after, denovo_lake) and "denovo" not in normalized(after, denovo_lake)


def test_denovo_only_study_gets_a_report(denovo_lake):
    """Study 'novo' (no annotation, no annotation file): a page with an empty annotation table and its two de
    novo lists (an unparsable SMILES said, not drawn); 'novo_failed' (errors only): the section says no scan got
    proposals and the summary counts why; unknown studies name both."""
    text = render_study_report(denovo_lake, "novo")
    assert "<h2>Rank-1 annotations (0)</h2>" in text and re.search(r"<tbody>(.*?)</tbody>", text, re.S).group(1) == ""
    sections = denovo_sections(text)
    assert len(sections) == 2 and "<h2>De novo proposals (2)</h2>" in text
    assert "SMILES does not parse" in sections[0] and sections[0].count('<svg class="structure"') == 1
    assert "unknowns.mgf" in sections[0] and "u 1" in sections[0]
    failed = render_study_report(denovo_lake, "novo_failed")
    assert "<h2>De novo proposals (0)</h2>" in failed and "No scan got de novo proposals" in failed
    assert denovo_sections(failed) == [] and "<td>read</td><td><code>unreadable_file</code></td>" in failed
    with pytest.raises(StudyNotFound, match="studies there: broken, mb, novo, novo_failed, scored"):
        render_study_report(denovo_lake, "nope")


def test_denovo_lists_are_capped_and_the_page_says_so(denovo_lake):
    """denovo_lists=1, denovo_top=2: the first list by file and query id, its two best proposals, and a note
    pointing to `speclake export denovo`; a cap of 0 keeps the counts and drops the lists."""
    text = render_study_report(denovo_lake, "mb", settings=ReportSettings(denovo_lists=1, denovo_top=2))
    sections = denovo_sections(text)
    assert len(sections) == 1
    assert re.findall(r'<figure class="proposal" data-rank="(\d+)">', sections[0]) == ["1", "2"]
    assert "scan &amp; 1" in sections[0]
    assert "The top 2 proposals of the first 1 of 4 lists" in text and "speclake export denovo" in text
    none = render_study_report(denovo_lake, "mb", settings=ReportSettings(denovo_lists=0))
    assert denovo_sections(none) == [] and "<h2>De novo proposals (4)</h2>" in none
    with pytest.raises(ValueError):
        ReportSettings(denovo_top=0)


@pytest.mark.skipif(chromium_binary() is None, reason="no chromium installed (apt-get install chromium)")
def test_denovo_only_page_in_chromium(denovo_lake, tmp_path):
    """The de novo-only page in a real headless Chromium: the script runs without error over the empty
    annotation table, nothing is fetched, and the structure drawings are laid out at their size."""
    page = write_study_report(denovo_lake, "novo", tmp_path / "novo.html")
    with Chromium(chromium_binary(), width=1280, height=1200) as chrome:
        chrome.open(page.resolve().as_uri())
        chrome.screenshot(tmp_path / "novo.png")
        assert chrome.js("document.body.dataset.reportReady") == "1" and chrome.errors == []
        assert chrome.requests == [page.resolve().as_uri()], "nothing fetched at view time"
        widths = chrome.js("Array.from(document.querySelectorAll('section.denovo svg.structure'))"
                           ".map(s => s.getBoundingClientRect().width)")
        assert len(widths) == 3 and min(widths) >= 150
