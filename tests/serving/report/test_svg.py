"""The report's SVG/HTML builders: peak matching, mirror plot highlighting, escaping, structure, tree."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from speclake.serving.report.svg import (LIBRARY_MATCHED, QUERY_MATCHED, UNMATCHED, Peaks, esc, label_peaks,
                                         match_peaks, mirror_plot_svg, nice_ticks, structure_svg, tree_formulas,
                                         tree_html)

SVG = "{http://www.w3.org/2000/svg}"

# Caffeine [M+H]+ (C8H10N4O2): precursor 195.0877 and its known fragments 138.0662 (C6H8N3O+, -C2H3NO)
# and 110.0713 (C5H8N3+, then -CO); 42.0338 (C2H4N+).
CAFFEINE_MZ = [42.0338, 110.0713, 138.0662, 195.0877]
CAFFEINE_INT = [5.0, 20.0, 100.0, 40.0]


def peak_lines(svg: str) -> list[ET.Element]:
    root = ET.fromstring(svg)  # the plot is well-formed XML
    return [e for e in root.iter(f"{SVG}line") if "peak" in (e.get("class") or "")]


def test_match_peaks_pairs_within_tolerance_one_to_one_by_intensity():
    """Pairs are within the tolerance, each peak used once, the stronger pair wins a shared peak."""
    query_mz, query_int = [100.000, 100.015, 150.0, 200.0], [10.0, 100.0, 50.0, 30.0]
    lib_mz, lib_int = [100.010, 150.030, 199.995], [80.0, 60.0, 40.0]
    pairs = match_peaks(query_mz, query_int, lib_mz, lib_int, 0.02)
    assert pairs == [(1, 0), (3, 2)], "100.015 (stronger) takes 100.010; 150.0 vs 150.030 is outside 0.02 Da"
    assert match_peaks(query_mz, query_int, lib_mz, lib_int, 0.05) == [(1, 0), (2, 1), (3, 2)]
    assert match_peaks(query_mz, query_int, [], [], 0.02) == []
    with pytest.raises(ValueError, match="tolerance_da must be positive"):
        match_peaks(query_mz, query_int, lib_mz, lib_int, 0.0)


def test_mirror_plot_highlights_exactly_the_matched_peaks():
    """Query sticks point up, library sticks down; matched ones carry class 'matched' and their colour."""
    query = Peaks.of([100.0, 120.0, 150.0], [100.0, 30.0, 60.0], "query q1")
    library = Peaks.of([100.005, 150.01, 175.0, 190.0], [0.5, 1.0, 0.2, 0.1], "library L1")
    svg = mirror_plot_svg(query, library, tolerance_da=0.02, precursor_mz=200.0)
    lines = peak_lines(svg)
    q_lines = [e for e in lines if "query" in e.get("class")]
    l_lines = [e for e in lines if "library" in e.get("class")]
    assert len(q_lines) == 3 and len(l_lines) == 4
    matched_q = [e for e in q_lines if "matched" in e.get("class").split()]
    matched_l = [e for e in l_lines if "matched" in e.get("class").split()]
    assert len(matched_q) == 2 and len(matched_l) == 2, "100/100.005 and 150/150.01 match"
    assert {e.get("stroke") for e in matched_q} == {QUERY_MATCHED}
    assert {e.get("stroke") for e in matched_l} == {LIBRARY_MATCHED}
    assert {e.get("stroke") for e in lines if "unmatched" in e.get("class")} == {UNMATCHED}
    assert all(float(e.get("y2")) < float(e.get("y1")) for e in q_lines), "query peaks point up"
    assert all(float(e.get("y2")) > float(e.get("y1")) for e in l_lines), "library peaks point down"
    tips = [e.find(f"{SVG}title").text for e in matched_q]
    assert any("m/z 100.0000" in t and "(matched)" in t for t in tips)
    assert "(3 peaks, 2 matched)" in svg and "(4 peaks, 2 matched)" in svg
    assert "precursor m/z 200.0000" in svg


def test_mirror_plot_without_library_spectrum_and_bad_peaks():
    """No library spectrum: only query sticks, all grey; NaN / non-positive peaks are not drawn."""
    query = Peaks.of([100.0, float("nan"), 150.0, -3.0], [1.0, 2.0, 0.0, 1.0], "q")
    assert query.mz.tolist() == [100.0]
    lines = peak_lines(mirror_plot_svg(query, None))
    assert len(lines) == 1 and lines[0].get("stroke") == UNMATCHED


def test_text_is_escaped_in_svg_and_html():
    """A query id or name with markup comes out as text: no element is injected, the SVG stays valid."""
    evil = "<script>alert('x')</script> & \"quoted\""
    assert esc(evil) == "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;quoted&quot;"
    svg = mirror_plot_svg(Peaks.of([100.0], [1.0], evil), Peaks.of([100.0], [1.0], evil))
    root = ET.fromstring(svg)
    assert not list(root.iter(f"{SVG}script")) and not list(root.iter("script"))
    assert evil in "".join(root.itertext()), "the label is shown verbatim as text"
    assert evil in root.get("aria-label")
    long = "library X " + "y" * 200
    clipped = ET.fromstring(mirror_plot_svg(Peaks.of([100.0], [1.0], "q"), Peaks.of([100.0], [1.0], long)))
    who = [t for t in clipped.iter(f"{SVG}text") if t.get("class") == "who"][1].text
    assert len(who) < 100 and "\u2026" in who, "a long label is cut in the plot ..."
    assert long in clipped.get("aria-label"), "... and whole in the accessible label"


def test_axis_ticks_and_labels_do_not_overlap():
    """Ticks are round numbers covering the range; peak labels keep a minimum distance."""
    assert nice_ticks(83.0, 212.0) == [100.0, 150.0, 200.0], "steps of 1, 2 or 5 x 10^k, at most ~6 ticks"
    assert nice_ticks(83.0, 212.0, target=8) == [100.0, 120.0, 140.0, 160.0, 180.0, 200.0]
    assert nice_ticks(0.0, 1.0, target=5) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    xs = [10.0, 20.0, 100.0, 300.0]
    chosen = label_peaks(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 0.9, 0.5, 0.01]), xs, 6, min_gap_px=48)
    assert chosen == [0, 2], "20.0 is too close to the stronger 10.0; 300.0 is under 5%"


def test_structure_svg_draws_a_molecule_and_refuses_bad_smiles():
    """RDKit draws caffeine as inline SVG (no XML prolog); an unparsable SMILES gives None."""
    svg = structure_svg("Cn1c(=O)c2c(ncn2C)n(C)c1=O")
    assert svg is not None and svg.startswith('<svg class="structure"') and "<?xml" not in svg
    root = ET.fromstring(svg)
    assert len(list(root.iter(f"{SVG}path"))) > 10, "bonds are drawn"
    assert structure_svg("C1CC(") is None and structure_svg(None) is None


def test_tree_html_lists_peaks_formulas_and_losses():
    """The caffeine tree (project's fragtree code): 138.0662 -> C6H8N3O+ losing C2H3NO from the precursor."""
    from speclake.pipelines.features.fragtree import FragTree, compute_tree

    tree = compute_tree("C8H10N4O2", "[M+H]+", CAFFEINE_MZ, CAFFEINE_INT, precursor_mz=195.0877)
    assert isinstance(tree, FragTree)
    text = tree_html(tree)
    root = ET.fromstring(text)
    assert root.tag == "ul" and "C8H11N4O2+" in text
    assert "m/z 138.0662" in text and "C6H8N3O+" in text and "&#8722;C2H3NO" in text
    formulas = tree_formulas(tree, CAFFEINE_MZ)
    assert formulas[2] == "C6H8N3O+" and formulas[3] == "C8H11N4O2+"
    svg = mirror_plot_svg(Peaks.of(CAFFEINE_MZ, CAFFEINE_INT, "caffeine"), None, formulas=formulas)
    assert "C6H8N3O+" in svg, "explained peaks are labelled with their formula"
