"""What an evaluation leaves behind: the ``model_metrics`` rows as an Arrow table, the run's report
and record, a plain-text comparison and a PNG plot under ``<lake>/reports/``."""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from speclake.lake.catalog import CATALOG_DIR
from speclake.lake.run import RunReport

from . import metrics as M
from .tables import MODEL_METRICS

REPORTS_DIR = "reports"


@dataclass
class EvaluationReport(RunReport):
    """The report of one evaluation run (saved in its run record, ``_catalog/runs/<run>.json``)."""

    candidates: dict[str, Any] = field(default_factory=dict)   # "<mode>:<split>" -> candidate list counts
    methods: list[str] = field(default_factory=list)           # model_id of every scored method
    structures: list[str] = field(default_factory=list)        # structure files given
    structures_indexed: list[str] = field(default_factory=list)  # the files indexed (prefiltered)
    plot: str = ""
    model_metrics_version: int | None = None
    rows: int = 0


def metrics_table(rows: list[dict[str, Any]], run_id: str, created_at: datetime) -> pa.Table:
    """Rows as a ``model_metrics`` Arrow table (NaN stored as null)."""
    def clean(v: Any) -> Any:
        return None if isinstance(v, float) and not math.isfinite(v) else v

    full = [{**{k: clean(v) for k, v in r.items()}, "evaluation_run_id": run_id, "created_at": created_at}
            for r in rows]
    return pa.Table.from_pylist(full, schema=MODEL_METRICS)


def format_comparison(table: pa.Table) -> str:
    """Plain-text comparison of every method (overall stratum), one block per candidate mode."""
    rows = [r for r in table.to_pylist() if r["stratum_kind"] == "all"]
    lines = []

    def f(v: Any) -> str:
        return "   -  " if v is None else f"{v:6.3f}"

    for mode in sorted({r["candidate_mode"] for r in rows}):
        sub = [r for r in rows if r["candidate_mode"] == mode]
        if not sub:
            continue
        lines.append(f"candidates: {mode}  ({sub[0]['n_spectra']} test spectra, {sub[0]['n_structures']} structures, "
                     f"{sub[0]['mean_candidates']:.1f} candidates on average)")
        lines.append(f"  {'model_id':<32} {'method':<22} {'hit@1':>6} {'95% CI':>13} {'hit@5':>6} {'hit@20':>6} "
                     f"{'top1T':>6} {'dAUC':>6} {'dF1':>6}")
        for r in sorted(sub, key=lambda r: -(r["hit1"] or 0)):
            ci = (f"[{r['hit1_ci_low']:.2f}, {r['hit1_ci_high']:.2f}]" if r.get("hit1_ci_low") is not None
                  else "-")
            lines.append(f"  {r['model_id'][:32]:<32} {r['method'][:22]:<22} {f(r['hit1'])} {ci:>13} {f(r['hit5'])} "
                         f"{f(r['hit20'])} {f(r['top1_tanimoto'])} {f(r['descriptor_auc'])} {f(r['descriptor_f1'])}")
    return "\n".join(lines)


def plot_metrics(table: pa.Table, path: str | os.PathLike[str]) -> Path:
    """PNG: hit@1/5/20 per method (left) and hit@1 per novelty stratum (right), first candidate mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table.to_pylist()
    mode = sorted({r["candidate_mode"] for r in rows})[0]
    overall = [r for r in rows if r["candidate_mode"] == mode and r["stratum_kind"] == "all"]
    overall.sort(key=lambda r: -(r["hit1"] or 0))
    labels = [r["method"] if r["arch"] in ("classical", "library", "reference")
              else f"{r['arch']}:{r['model_id'][-6:]}|{r['method']}" for r in overall]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(12, 0.6 * len(overall) + 9), 0.25 * len(overall) + 4.5),
                                   gridspec_kw={"width_ratios": [3, 2]})
    x = np.arange(len(overall))
    for i, k in enumerate(M.HIT_KS):
        ax1.bar(x + (i - 1) * 0.27, [r[f"hit{k}"] or 0 for r in overall], width=0.27, label=f"hit@{k}")
    ax1.set_xticks(x, labels, rotation=60, ha="right", fontsize=8)
    ax1.set_ylim(0, 1)
    ax1.set_ylabel("share of test spectra")
    ax1.set_title(f"retrieval ({mode} candidates, {overall[0]['n_spectra'] if overall else 0} test spectra)")
    ax1.legend(fontsize=8)
    bins = M.novelty_labels()
    nov = [s for s in rows if s["candidate_mode"] == mode and s["stratum_kind"] == "novelty"]
    grid = np.full((len(overall), len(bins)), np.nan)
    n_bin = {s["stratum"]: s["n_spectra"] for s in nov}
    for i, r in enumerate(overall):
        for s in nov:
            if s["model_id"] == r["model_id"] and s["method"] == r["method"] and s["hit1"] is not None:
                grid[i, bins.index(s["stratum"])] = s["hit1"]
    ax2.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    for (i, j), v in np.ndenumerate(grid):
        if np.isfinite(v):
            ax2.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v < 0.6 else "black")
    ax2.set_xticks(range(len(bins)), [f"{b}\n(n={n_bin.get(b, 0)})" for b in bins], fontsize=8)
    ax2.set_yticks(range(len(overall)), labels, fontsize=7)
    ax2.set_xlabel("novelty: true structure's max Tanimoto to training structures")
    ax2.set_title("hit@1 by novelty stratum")
    fig.tight_layout()
    return save_figure(fig, path)


def save_figure(fig: Any, path: str | os.PathLike[str]) -> Path:
    """Save a matplotlib figure as PNG (creating its folder) and close it."""
    import matplotlib.pyplot as plt

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def run_plot_path(lake_dir: str | os.PathLike[str], run_id: str) -> Path:
    """Where :func:`evaluate` saves the plot of a run when no path is given."""
    return Path(lake_dir) / REPORTS_DIR / f"evaluation-{run_id}.png"


def run_record(lake_dir: str | os.PathLike[str], run_id: str) -> dict[str, Any]:
    """The saved record of an evaluation run: kind, status, settings, and its :class:`EvaluationReport`
    under ``report`` (candidate counts, methods, structures, plot, model_metrics_version, timings)."""
    return json.loads((Path(lake_dir) / CATALOG_DIR / "runs" / f"{run_id}.json").read_text())
