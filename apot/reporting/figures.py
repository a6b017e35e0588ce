"""The report's figures, as SVG text to inline in the HTML (matplotlib, no display needed).

Every function takes plain data (from summary.json, cited.yaml or the level sets) and returns
one ``<svg>`` element. Output is deterministic: fixed element ids (``svg.hashsalt``), no date
in the metadata, text kept as text, so the same data give the same bytes.
"""
from __future__ import annotations

import hashlib
import io
import re

from matplotlib import rc_context
from matplotlib.figure import Figure

from apot.quant.schemes import FLOAT_BITS, REGISTRY, magnitude_levels

RC = {"svg.hashsalt": "apot-report", "svg.fonttype": "none", "font.family": "DejaVu Sans",
      "font.size": 8, "axes.spines.top": False, "axes.spines.right": False}
BIT_COLORS = {FLOAT_BITS: "#222222", 5: "#8172b3", 4: "#55a868", 3: "#dd8452", 2: "#c44e52"}
SOURCE_STYLE = {"paper": ("#4c72b0", "s", "paper"), "repro": ("#dd8452", "^", "reproducibility report"),
                "ours": ("#55a868", "o", "this run")}


def _svg(fig: Figure) -> str:
    """The figure as an inline ``<svg>`` element (no XML prolog, no date), its element ids
    made unique in the page (several figures share one HTML document)."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    # the RDF metadata block only names vocabularies; inline figures need none of it
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    text = text[text.index("<svg"):]
    prefix = "f" + hashlib.sha256(text.encode()).hexdigest()[:8] + "-"
    ids = set(re.findall(r'\bid="([^"]+)"', text))
    return re.sub(r'(\bid="|#)([^"\s)]+)(?=["\)])',
                  lambda m: m.group(1) + (prefix + m.group(2) if m.group(2) in ids
                                          else m.group(2)), text)


def level_sets_svg(bit_widths=(3, 4)) -> str:
    """Normalized levels of every registered scheme (uniform, PoT and APoT) for unsigned data
    (alpha = 1), one panel per bit-width: the reproducibility report's Figure 1."""
    schemes = list(REGISTRY.values())[::-1]  # APoT, registered first, on top
    with rc_context(RC):
        fig = Figure(figsize=(6.4, 1.0 + 0.9 * len(bit_widths)))
        axes = fig.subplots(len(bit_widths), 1, squeeze=False)[:, 0]
        for ax, bits in zip(axes, bit_widths):
            for row, scheme in enumerate(schemes):
                values = [float(v) for v in magnitude_levels(scheme.name, bits)]
                ax.vlines(values, row - 0.3, row + 0.3, color=scheme.color, lw=1.2)
            ax.set_yticks(range(len(schemes)), [scheme.label for scheme in schemes])
            ax.set_ylim(-0.6, len(schemes) - 0.4)
            ax.set_xlim(-0.02, 1.02)
            ax.set_title(f"{bits}-bit unsigned levels (α = 1)", fontsize=8, loc="left")
        axes[-1].set_xlabel("level")
        fig.tight_layout()
        return _svg(fig)


def curves_svg(title: str, curves: list[tuple[str, int, list[float]]]) -> str:
    """Test top-1 per epoch: one line per run (label, bits, values)."""
    with rc_context(RC):
        fig = Figure(figsize=(6.4, 2.6))
        ax = fig.subplots()
        for label, bits, values in curves:
            ax.plot(range(1, len(values) + 1), values, marker="o", ms=2.5, lw=1.2,
                    color=BIT_COLORS.get(bits, "#937860"), label=label)
        ax.set_xlabel("epoch of the run (each fine-tune starts from its parent's best weights)")
        ax.set_ylabel("test top-1 (%)")
        ax.set_title(title, fontsize=8, loc="left")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False, ncol=min(4, len(curves)))
        fig.tight_layout()
        return _svg(fig)


def accuracy_by_bits_svg(title: str, panels: list[tuple[str, list[dict]]]) -> str:
    """Top-1 against bit-width, paper / reproducibility report / this run; one panel per
    architecture. Rows: {"bits", "paper", "repro", "ours"} (None where there is no value)."""
    with rc_context(RC):
        fig = Figure(figsize=(6.4, 2.4))
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, (arch, rows) in zip(axes, panels):
            labels = ["FP32" if r["bits"] == FLOAT_BITS else f"{r['bits']}-bit" for r in rows]
            for source, (color, marker, name) in SOURCE_STYLE.items():
                points = [(i, r[source]) for i, r in enumerate(rows) if r[source] is not None]
                if points:
                    ax.plot(*zip(*points), marker=marker, color=color, lw=1, ms=4, label=name)
            ax.set_xticks(range(len(rows)), labels)
            ax.set_title(arch, fontsize=8, loc="left")
            ax.set_ylabel("top-1 (%)")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7, frameon=False)
        fig.suptitle(title, fontsize=8, x=0.01, ha="left")
        fig.tight_layout()
        return _svg(fig)


def accuracy_vs_cost_svg(title: str, series: list[tuple[str, list[tuple[float, float, int]]]]) -> str:
    """Top-1 against FixOPs (millions, log scale): one line per model, points labelled with
    their bit-width. Series: (label, [(fixops_millions, top1, bits), ...])."""
    with rc_context(RC):
        fig = Figure(figsize=(6.4, 2.8))
        ax = fig.subplots()
        for index, (label, points) in enumerate(series):
            points = sorted(points)
            xs, ys, bits = zip(*points)
            line, = ax.plot(xs, ys, marker="o", ms=3.5, lw=1, label=label,
                            color=f"C{index % 10}")
            for x, y, b in points:
                ax.annotate("FP32" if b == FLOAT_BITS else f"{b}b", (x, y),
                            textcoords="offset points", xytext=(3, 3), fontsize=6,
                            color=line.get_color())
        ax.set_xscale("log")
        ax.set_xlabel("FixOPs per image (millions, log scale)")
        ax.set_ylabel("best test top-1 (%)")
        ax.set_title(title, fontsize=8, loc="left")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False)
        fig.tight_layout()
        return _svg(fig)


def warm_bits_svg(title: str, series: list[dict]) -> str:
    """Best top-1 against bit-width, FP32 first then falling bits. One line per series
    {"label", "color", "marker", "points": [(bits, mean, std, n), ...]}: the seed interval
    (mean ± std) as error bars, n in the legend (beside each point where it varies; None for
    a single released model). A chain whose steps ran one epoch each has no per-epoch curve
    worth drawing: what it shows is how top-1 falls with the bit-width."""
    order = sorted({p[0] for s in series for p in s["points"]}, reverse=True)
    with rc_context(RC):
        fig = Figure(figsize=(6.4, 2.9))
        ax = fig.subplots()
        for index, line in enumerate(series):
            points = sorted(line["points"], key=lambda p: order.index(p[0]))
            # a small sideways shift per series keeps overlapping error bars apart
            shift = 0.05 * (index - (len(series) - 1) / 2)
            xs = [order.index(p[0]) + shift for p in points]
            ax.errorbar(xs, [p[1] for p in points], yerr=[p[2] for p in points],
                        color=line["color"], marker=line.get("marker", "o"), ms=3.5, lw=1,
                        capsize=3, label=line["label"] + _seeds_label(points))
            if len({p[3] for p in points}) > 1:
                for x, (_, mean, std, n) in zip(xs, points):
                    ax.annotate(f"n = {n}", (x, mean + std), textcoords="offset points",
                                xytext=(3, 2), fontsize=6, color=line["color"])
        ax.set_xticks(range(len(order)),
                      ["FP32" if b == FLOAT_BITS else f"{b}-bit" for b in order])
        ax.set_xlim(-0.4, len(order) - 0.6)
        ax.set_xlabel("bit-width (weights and activations)")
        ax.set_ylabel("best test top-1 (%)")
        ax.set_title(title, fontsize=8, loc="left")
        ax.grid(alpha=0.3)
        # beside the axes: inside, it would cover the FP32 points at the left end
        ax.legend(fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
        fig.tight_layout()
        return _svg(fig)


def _seeds_label(points: list[tuple]) -> str:
    counts = sorted({p[3] for p in points if p[3] is not None})
    if not counts:
        return ""
    span = str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    return f" (n = {span} seed{'' if counts == [1] else 's'})"
