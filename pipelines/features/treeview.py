"""Show a fragmentation tree: indented text and a matplotlib drawing (boxes and lines)."""
from __future__ import annotations

import os
from typing import Any


def _children(row: dict[str, Any]) -> dict[int, list[tuple[int, str]]]:
    out: dict[int, list[tuple[int, str]]] = {}
    for e in row.get("edges") or []:
        out.setdefault(int(e["parent"]), []).append((int(e["child"]), e.get("loss") or ""))
    nodes = row.get("nodes") or []
    for kids in out.values():
        kids.sort(key=lambda c: -float(nodes[c[0]]["mz"]))
    return out


def _label(node: dict[str, Any]) -> str:
    level = int(node.get("ms_level") or 2)
    ppm = node.get("ppm_error")
    parts = [f"{node['formula']}", f"m/z {float(node['mz']):.4f}"]
    if node.get("intensity"):
        parts.append(f"int {float(node['intensity']):.2f}")
    if ppm is not None:
        parts.append(f"{float(ppm):+.1f} ppm")
    if level > 2:
        parts.append(f"MS{level}")
    return "  ".join(parts)


def format_tree(row: dict[str, Any]) -> str:
    """Indented text of a ``fragtrees`` row: one node per line, ``-LOSS`` on the edge into it."""
    nodes = row.get("nodes") or []
    if not nodes:
        return "(empty tree)"
    kids = _children(row)
    lines = [f"{row.get('precursor_formula')} {row.get('adduct')}  score {float(row.get('score') or 0):.2f}  "
             f"explained intensity {100 * float(row.get('explained_intensity') or 0):.1f}%  "
             f"{len(nodes)} nodes"]

    def walk(i: int, prefix: str, loss: str | None, last: bool) -> None:
        branch = "" if loss is None else ("└─ " if last else "├─ ")
        head = "" if loss is None else f"-{loss} → "
        lines.append(f"{prefix}{branch}{head}{_label(nodes[i])}")
        sub = prefix + ("" if loss is None else ("   " if last else "│  "))
        children = kids.get(i, [])
        for k, (child, child_loss) in enumerate(children):
            walk(child, sub, child_loss, k == len(children) - 1)

    walk(0, "", None, True)
    return "\n".join(lines)


def layout(row: dict[str, Any]) -> dict[int, tuple[float, float]]:
    """(x, y) of every node: y = -depth, leaves spread evenly, parents centred over their children."""
    kids = _children(row)
    pos: dict[int, tuple[float, float]] = {}
    next_x = [0.0]

    def place(i: int, depth: int) -> float:
        children = kids.get(i, [])
        if not children:
            x = next_x[0]
            next_x[0] += 1.0
        else:
            xs = [place(c, depth + 1) for c, _ in children]
            x = (min(xs) + max(xs)) / 2
        pos[i] = (x, -float(depth))
        return x

    if row.get("nodes"):
        place(0, 0)
    return pos


def draw_tree(row: dict[str, Any], path: str | os.PathLike[str], *, title: str | None = None) -> None:
    """Draw a ``fragtrees`` row to an image file (PNG, SVG or PDF by extension) with matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nodes = row.get("nodes") or []
    pos = layout(row)
    width = max(1.0, max((x for x, _ in pos.values()), default=0.0) + 1)
    depth = max(1.0, -min((y for _, y in pos.values()), default=0.0) + 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 2.2 * width), max(3.0, 1.6 * depth)))
    for e in row.get("edges") or []:
        p, c = int(e["parent"]), int(e["child"])
        if p not in pos or c not in pos:
            continue
        (x0, y0), (x1, y1) = pos[p], pos[c]
        ax.plot([x0, x1], [y0, y1], color="0.5", lw=1, zorder=1)
        ax.text((x0 + x1) / 2, (y0 + y1) / 2, f"-{e.get('loss')}", fontsize=7, color="tab:red", ha="center",
                va="center", bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none"}, zorder=2)
    for i, (x, y) in pos.items():
        n = nodes[i]
        level = int(n.get("ms_level") or 2)
        ax.text(x, y, f"{n['formula']}\n{float(n['mz']):.4f}", fontsize=8, ha="center", va="center", zorder=3,
                bbox={"boxstyle": "round,pad=0.3", "fc": "#e8f0fe" if level == 2 else "#fdecc8", "ec": "0.3"})
    ax.set_xlim(-0.7, width - 0.3)
    ax.set_ylim(-depth + 0.5, 0.6)
    ax.axis("off")
    ax.set_title(title or f"{row.get('precursor_formula')} {row.get('adduct')}  score {float(row.get('score') or 0):.2f}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
