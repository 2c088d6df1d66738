"""Reference panel choice (greedy cover, deterministic) and per-spectrum similarity rows."""
from __future__ import annotations

import numpy as np

from speclake.pipelines.features.refpanel import RefSimSettings, choose_panel, greedy_cover, load_panels, refsim_row, save_panel
from speclake.pipelines.features.similarity import Peaks


def test_greedy_cover_prefers_hubs_then_uncovered_regions() -> None:
    """Star 0-{1,2,3} and pair 4-5: the hub 0 first, then one of the pair (lower id), then the rest by id."""
    links = np.zeros((6, 6), dtype=bool)
    for a, b in [(0, 1), (0, 2), (0, 3), (4, 5)]:
        links[a, b] = links[b, a] = True
    ids = ["a", "b", "c", "d", "e", "f"]
    assert greedy_cover(links, ids, 2) == [0, 4]
    assert greedy_cover(links, ids, 6)[:2] == [0, 4]


def _cand(sid: str, mz: list[float], prec: float, mode: str = "positive") -> dict:
    return {"spectrum_id": sid, "ionmode": mode, "precursor_mz": prec, "mz": mz, "intensities": [1.0] * len(mz)}


def test_choose_panel_is_deterministic_and_per_ionmode(tmp_path) -> None:
    """Same candidates in another order give the same panel; each ion mode gets its own panel."""
    cands = [_cand(f"p{i}", [50.0 + i, 80.0, 120.5], 150.0 + i) for i in range(6)] + \
        [_cand(f"n{i}", [60.0 + i, 90.0], 140.0, "negative") for i in range(3)]
    s = RefSimSettings(panel_size=2)
    a = choose_panel(cands, s)
    b = choose_panel(list(reversed(cands)), s)
    assert [r["spectrum_id"] for r in a] == [r["spectrum_id"] for r in b]
    assert {r["ionmode"] for r in a} == {"positive", "negative"}
    path = tmp_path / "panel.parquet"
    save_panel(a, path)
    panels = load_panels(str(path), True)
    row = refsim_row("q", "positive", Peaks.of([80.0, 120.5], [1.0, 1.0], 151.0), panels, s)
    assert len(row["refsim_cosine"]) == 2 and len(row["refsim_entropy"]) == 2
    assert refsim_row("q", "unknown", Peaks.of([80.0], [1.0], 151.0), panels, s)["skip_code"] == "no_panel_for_ionmode"
