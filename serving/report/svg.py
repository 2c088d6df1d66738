"""SVG and HTML pieces of the study report: mirror plot, structure drawing, fragmentation tree.

Every builder is pure (inputs -> markup string) and escapes every text it puts into the markup,
so a query id or compound name from a study file can never inject markup.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

#: Colours of the mirror plot (matched peaks stand out, unmatched are grey).
QUERY_MATCHED = "#d62728"
LIBRARY_MATCHED = "#1f77b4"
UNMATCHED = "#9a9a9a"


def esc(value: object) -> str:
    """``value`` as text safe inside an HTML/SVG element or a quoted attribute (None -> empty)."""
    return "" if value is None else html.escape(str(value), quote=True)


def clip_text(text: str, limit: int = 72) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis (SVG text does not wrap)."""
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


def match_peaks(query_mz: Sequence[float], query_int: Sequence[float], library_mz: Sequence[float],
                library_int: Sequence[float], tolerance_da: float) -> list[tuple[int, int]]:
    """One-to-one pairs (query peak, library peak) within ``tolerance_da``, as the cosine score pairs them:
    candidate pairs taken greedily by decreasing intensity product, each peak used once."""
    if not tolerance_da > 0:
        raise ValueError(f"tolerance_da must be positive, got {tolerance_da}")
    qm, qi = np.asarray(query_mz, dtype=np.float64), np.asarray(query_int, dtype=np.float64)
    lm, li = np.asarray(library_mz, dtype=np.float64), np.asarray(library_int, dtype=np.float64)
    if not len(qm) or not len(lm):
        return []
    order = np.argsort(lm, kind="stable")
    lo = np.searchsorted(lm[order], qm - tolerance_da, side="left")
    hi = np.searchsorted(lm[order], qm + tolerance_da, side="right")
    pairs = [(qi[q] * li[order[j]], q, int(order[j])) for q in range(len(qm)) for j in range(lo[q], hi[q])]
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    used_q, used_l, out = set(), set(), []
    for _, q, j in pairs:
        if q not in used_q and j not in used_l:
            used_q.add(q)
            used_l.add(j)
            out.append((int(q), j))
    return sorted(out)


def nice_ticks(lo: float, hi: float, target: int = 6) -> list[float]:
    """Round axis tick values (1, 2 or 5 times a power of ten apart) covering ``[lo, hi]``."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(target, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step) * step
    return [round(first + k * step, 6) for k in range(int((hi - first) / step + 1e-9) + 1)]


@dataclass(frozen=True)
class Peaks:
    """A peak list to plot: m/z, intensities (any scale; plotted relative to the most intense) and a label."""

    mz: np.ndarray
    intensities: np.ndarray
    label: str

    @classmethod
    def of(cls, mz: Sequence[float], intensities: Sequence[float], label: str) -> "Peaks":
        """Finite, positive peaks of the given lists (others are not drawn)."""
        m = np.asarray(mz if mz is not None else [], dtype=np.float64)
        i = np.asarray(intensities if intensities is not None else [], dtype=np.float64)
        n = min(len(m), len(i))
        m, i = m[:n], i[:n]
        keep = np.isfinite(m) & np.isfinite(i) & (i > 0) & (m > 0)
        return cls(m[keep], i[keep], label)

    def relative(self) -> np.ndarray:
        """Intensities relative to the most intense peak (0..1)."""
        top = float(self.intensities.max()) if len(self.intensities) else 1.0
        return self.intensities / top


def mirror_plot_svg(query: Peaks, library: Peaks | None, *, tolerance_da: float = 0.02,
                    precursor_mz: float | None = None, formulas: Mapping[int, str] | None = None,
                    width: int = 640, height: int = 320, n_labels: int = 6) -> str:
    """Mirror plot: query peaks up, library peaks down (relative intensity), peaks matched within
    ``tolerance_da`` coloured (``class="peak matched"``), the others grey; m/z axis with ticks, the
    precursor m/z dashed, the ``n_labels`` most intense query peaks labelled with their m/z (and the
    fragment formula of ``formulas``, query peak index -> formula, where the tree explains the peak).
    Every peak has a tooltip (m/z, relative intensity, formula). Without a library spectrum the plot is
    one-sided (the query alone) and shorter."""
    formulas = formulas or {}
    lib = library if library is not None else Peaks.of([], [], "no library spectrum")
    pairs = match_peaks(query.mz, query.intensities, lib.mz, lib.intensities, tolerance_da) \
        if len(query.mz) and len(lib.mz) else []
    q_matched, l_matched = {q for q, _ in pairs}, {j for _, j in pairs}
    left, right, top, bottom = 48, 12, 44, 46
    if library is None:  # one-sided: the query alone, baseline at the bottom
        height = int(height * 0.7)
    plot_w, plot_h = width - left - right, height - top - bottom
    up, down = (plot_h / 2, plot_h / 2) if library is not None else (plot_h, 0.0)
    mid = top + up
    lo, hi = mz_range(query.mz, lib.mz, [precursor_mz] if precursor_mz else None)

    def x(mz: float) -> float:
        return left + (mz - lo) / (hi - lo) * plot_w

    parts = [f'<svg class="mirror" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" role="img" '
             f'aria-label="{esc(f"mirror plot: {query.label} vs {lib.label}")}">',
             f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h:.1f}" fill="#fff" stroke="#ccc"/>']
    for frac in (0.5, 1.0):  # intensity grid, both halves
        for y in {mid - frac * up, mid + frac * down}:
            parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
    parts.append(f'<text x="{left - 4}" y="{top + 4}" class="ax" text-anchor="end">100%</text>'
                 f'<text x="{left - 4}" y="{mid + 3}" class="ax" text-anchor="end">0</text>'
                 + (f'<text x="{left - 4}" y="{top + plot_h}" class="ax" text-anchor="end">100%</text>'
                    if down else ""))
    if precursor_mz and lo <= precursor_mz <= hi:
        px = x(precursor_mz)
        parts.append(f'<line class="precursor" x1="{px:.1f}" x2="{px:.1f}" y1="{top}" y2="{top + plot_h:.1f}" '
                     f'stroke="#999" stroke-dasharray="4 3"><title>precursor m/z {precursor_mz:.4f}</title></line>')

    def sticks(peaks: Peaks, upward: bool, matched: set[int], colour: str, name: str) -> None:
        rel = peaks.relative()
        for k in np.argsort(rel, kind="stable"):  # weak peaks first, strong ones drawn on top
            k = int(k)
            px, length = x(float(peaks.mz[k])), float(rel[k]) * (up if upward else down)
            y2 = mid - length if upward else mid + length
            hit = k in matched
            tip = f"{name} m/z {peaks.mz[k]:.4f}, {100 * rel[k]:.1f}%" + (" (matched)" if hit else "")
            if upward and k in formulas:
                tip += f", {formulas[k]}"
            parts.append(f'<line class="peak {"matched" if hit else "unmatched"} {name}" x1="{px:.1f}" '
                         f'x2="{px:.1f}" y1="{mid:.1f}" y2="{y2:.1f}" stroke="{colour if hit else UNMATCHED}" '
                         f'stroke-width="{1.6 if hit else 1.0}"><title>{esc(tip)}</title></line>')

    sticks(query, True, q_matched, QUERY_MATCHED, "query")
    sticks(lib, False, l_matched, LIBRARY_MATCHED, "library")
    for k in label_peaks(query.mz, query.relative(), [x(float(m)) for m in query.mz], n_labels):
        px, py = x(float(query.mz[k])), mid - float(query.relative()[k]) * up - 3
        formula = f'<tspan x="{px:.1f}" dy="-11">{esc(formulas[k])}</tspan>' if k in formulas else ""
        parts.append(f'<text class="lbl" x="{px:.1f}" y="{py:.1f}" text-anchor="middle">'
                     f'{query.mz[k]:.4f}{formula}</text>')
    parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{mid:.1f}" y2="{mid:.1f}" stroke="#333"/>')
    axis_y = top + plot_h
    for t in nice_ticks(lo, hi, target=8):
        parts.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{axis_y:.1f}" y2="{axis_y + 4:.1f}" stroke="#333"/>'
                     f'<text class="ax" x="{x(t):.1f}" y="{axis_y + 15:.1f}" text-anchor="middle">{t:g}</text>')
    parts.append(f'<text class="ax" x="{left + plot_w:.1f}" y="{axis_y + 28:.1f}" text-anchor="end">m/z</text>'
                 f'<text class="who" x="{left}" y="12">&#9650; {esc(clip_text(query.label))} '
                 f'({len(query.mz)} peaks, {len(q_matched)} matched)</text>'
                 + (f'<text class="who" x="{left}" y="{height - 4}">&#9660; {esc(clip_text(lib.label))} '
                    f'({len(lib.mz)} peaks, {len(l_matched)} matched)</text>' if library is not None else ""))
    parts.append("</svg>")
    return "".join(parts)


def mz_range(*arrays: Sequence[float] | None) -> tuple[float, float]:
    """The m/z axis range of a plot of these values: their span padded by 5% (at least 5), from >= 0."""
    values = np.concatenate([np.asarray(a, np.float64).ravel() for a in arrays if a is not None and len(a)] or
                            [np.zeros(0)])
    values = values[np.isfinite(values)]
    lo, hi = (float(values.min()), float(values.max())) if len(values) else (0.0, 100.0)
    pad = max((hi - lo) * 0.05, 5.0)
    return max(lo - pad, 0.0), hi + pad


def attribution_svg(mz: Sequence[float], attributions: Sequence[float], *, label: str = "", width: int = 640,
                    height: int = 160, n_labels: int = 4, axis: tuple[float, float] | None = None) -> str:
    """Per-peak attributions as sticks: up (red) for peaks supporting the candidate, down (blue) against,
    length relative to the largest absolute attribution; m/z axis (``axis``: the mirror plot's range, so
    the two line up); tooltips with the values."""
    m = np.asarray(mz, dtype=np.float64)
    a = np.asarray(attributions, dtype=np.float64)
    left, right, top, bottom = 48, 12, 22, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    mid = top + plot_h / 2
    lo, hi = axis if axis is not None else mz_range(m)
    scale = float(np.abs(a).max()) / 0.8 if len(a) and np.abs(a).max() > 0 else 1.0  # longest stick: 80%

    def x(v: float) -> float:
        return left + (v - lo) / (hi - lo) * plot_w

    parts = [f'<svg class="attribution" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" role="img" aria-label="{esc("per-peak attributions " + label)}">',
             f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fff" stroke="#ccc"/>',
             f'<text class="who" x="{left}" y="12">{esc(clip_text(label, 96))}</text>',
             f'<text class="ax" x="{left - 4}" y="{top + 8}" text-anchor="end">+{scale:.2g}</text>',
             f'<text class="ax" x="{left - 4}" y="{top + plot_h}" text-anchor="end">&#8722;{scale:.2g}</text>',
             f'<text class="ax" x="{left - 4}" y="{mid + 3:.1f}" text-anchor="end">0</text>']
    for k in np.argsort(np.abs(a), kind="stable"):
        k = int(k)
        if a[k] == 0 or not lo <= m[k] <= hi:
            continue
        y2 = mid - a[k] / scale * plot_h / 2
        colour = QUERY_MATCHED if a[k] > 0 else LIBRARY_MATCHED
        parts.append(f'<line class="attr {"pos" if a[k] > 0 else "neg"}" x1="{x(m[k]):.1f}" x2="{x(m[k]):.1f}" '
                     f'y1="{mid:.1f}" y2="{y2:.1f}" stroke="{colour}" stroke-width="1.6">'
                     f'<title>m/z {m[k]:.4f}: attribution {a[k]:+.3g}</title></line>')
    for k in np.argsort(-np.abs(a), kind="stable")[:n_labels]:
        if a[k] != 0:
            y = mid - a[k] / scale * plot_h / 2 + (-3 if a[k] > 0 else 10)
            parts.append(f'<text class="lbl" x="{x(m[k]):.1f}" y="{y:.1f}" text-anchor="middle">{m[k]:.4f}</text>')
    parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{mid:.1f}" y2="{mid:.1f}" stroke="#333"/>')
    for t in nice_ticks(lo, hi, target=8):
        parts.append(f'<text class="ax" x="{x(t):.1f}" y="{top + plot_h + 14}" text-anchor="middle">{t:g}</text>')
    parts.append(f'<text class="ax" x="{left + plot_w}" y="{height - 2}" text-anchor="end">m/z</text></svg>')
    return "".join(parts)


def label_peaks(mz: np.ndarray, rel: np.ndarray, xs: Sequence[float], n: int, *, min_rel: float = 0.05,
                min_gap_px: float = 48.0) -> list[int]:
    """Indices of at most ``n`` peaks to label: the most intense first, at least ``min_rel`` of the base
    peak, none closer than ``min_gap_px`` to a label already placed (labels never overlap)."""
    chosen: list[int] = []
    for k in np.argsort(-np.asarray(rel), kind="stable"):
        if len(chosen) >= n or rel[k] < min_rel:
            break
        if all(abs(xs[k] - xs[j]) >= min_gap_px for j in chosen):
            chosen.append(int(k))
    return sorted(chosen)


def structure_svg(smiles: str | None, *, width: int = 260, height: int = 200) -> str | None:
    """The RDKit 2D drawing of ``smiles`` as inline SVG (no XML prolog), or None when it does not parse."""
    if not smiles:
        return None
    from rdkit import Chem, RDLogger
    from rdkit.Chem.Draw import rdMolDraw2D

    RDLogger.DisableLog("rdApp.*")
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return None
    drawer = rdMolDraw2D.MolDraw2DSVG(width, height)
    drawer.drawOptions().clearBackground = False
    rdMolDraw2D.PrepareAndDrawMolecule(drawer, mol)
    drawer.FinishDrawing()
    text = drawer.GetDrawingText()
    start = text.find("<svg")
    text = text.replace(";stroke-linecap:butt;stroke-linejoin:miter;stroke-opacity:1", "")  # SVG defaults
    return text[start:].replace("<svg", '<svg class="structure"', 1) if start >= 0 else None


def tree_html(tree) -> str:
    """A fragmentation tree (:class:`speclake.pipelines.features.fragtree.FragTree`) as nested lists:
    each explained peak as m/z -> ion formula, with the neutral loss from its parent and the ppm error."""
    children: dict[int, list] = {}
    for edge in tree.edges:
        children.setdefault(edge.parent, []).append(edge)

    def node(i: int, loss: str | None) -> str:
        n = tree.nodes[i]
        seen = "" if n.intensity > 0 else ' <span class="muted">(precursor peak absent)</span>'
        head = (f'<span class="mz">m/z {n.mz:.4f}</span> &#8594; <span class="formula">{esc(n.formula)}</span>'
                + (f' <span class="loss">&#8722;{esc(loss)}</span>' if loss else "")
                + f' <span class="muted">{n.ppm_error:+.1f} ppm</span>' + seen)
        kids = sorted(children.get(i, []), key=lambda e: -tree.nodes[e.child].mz)
        inner = "".join(node(e.child, e.loss) for e in kids)
        return f"<li>{head}" + (f"<ul>{inner}</ul>" if inner else "") + "</li>"

    return f'<ul class="tree">{node(0, None)}</ul>'


def tree_formulas(tree, mz: Sequence[float], tolerance_da: float = 1e-6) -> dict[int, str]:
    """Peak index (into ``mz``) -> ion formula of the tree node explaining that peak."""
    m = np.asarray(mz, dtype=np.float64)
    out: dict[int, str] = {}
    for n in tree.nodes:
        if n.intensity > 0 and len(m):
            k = int(np.argmin(np.abs(m - n.mz)))
            if abs(m[k] - n.mz) <= tolerance_da:
                out[k] = n.formula
    return out


__all__ = ["Peaks", "attribution_svg", "clip_text", "esc", "label_peaks", "match_peaks", "mirror_plot_svg", "mz_range",
           "nice_ticks", "structure_svg", "tree_formulas", "tree_html"]
