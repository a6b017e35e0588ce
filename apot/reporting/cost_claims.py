"""The cost model's counts against the paper's cost figures: each FixOPs row's verdict (within
the paper's rounding or not), APoT's reduction against uniform, and the per-MAC counting rule
the paper's figures imply. The 22 % and 2x claims are judged from this in
apot/reporting/claims.py; the report renders it."""
from __future__ import annotations

from apot.quant.levels import apot_terms
from apot.quant.schemes import APOT, FLOAT_BITS, POT, UNIFORM


def _printed_tolerance(printed: str) -> float:
    """Half a unit of the last printed digit, in millions ("616M" -> 0.5, "1.82G" -> 5)."""
    number, unit = printed[:-1], printed[-1]
    decimals = len(number.partition(".")[2])
    return 0.5 * 10.0 ** -decimals * (1000.0 if unit == "G" else 1.0)



def _reduction(apot: float, uniform: float) -> float:
    return round(100.0 * (1.0 - apot / uniform), 1)



def cost_section(summary: dict, cited: dict) -> dict | None:
    """The cost model against the paper's figures; None when no cost tables were computed.

    Verdict rule of the FixOPs rows: ours lies within half a unit of the paper's last printed
    digit. The 22 % and 2x claims are judged in apot/reporting/claims.py, from what this returns.
    """
    cost = summary.get("cost")
    if not cost:
        return None
    ours = {(r["arch"], r["bits"], r["scheme"]): r for r in cost["paper"]}
    rows = []
    for row in cited["cost"]["fixops"]:
        scheme = APOT if row["bits"] == FLOAT_BITS else row["scheme"]
        mine = ours[(row["arch"], row["bits"], scheme)]
        value = mine["fixops"] / 1e6
        tolerance = _printed_tolerance(row["printed"])
        diff, diff_percent = value - row["paper"], 100.0 * (value - row["paper"]) / row["paper"]
        with_elementwise = (mine["fixops"] + mine["elementwise_ops"]) / 1e6
        if abs(diff) <= tolerance:
            verdict = f"matches (within ±{tolerance:g}M, the paper's rounding)"
        elif row["bits"] == FLOAT_BITS and abs(with_elementwise - row["paper"]) <= tolerance:
            verdict = (f"matches when batch-norm, ReLU and pooling operations are counted too "
                       f"({with_elementwise:,.1f}M); conv/linear MACs alone are {value:,.1f}M")
        elif abs(diff_percent) < 1:
            verdict = f"close: {diff:+.2f}M ({diff_percent:+.2f} %)"
        else:
            verdict = f"differs: {diff:+.1f}M ({diff_percent:+.1f} %)"
        rows.append({**row, "ours": value, "diff": diff, "diff_percent": diff_percent,
                     "tolerance": tolerance, "matches": abs(diff) <= tolerance,
                     "verdict": verdict, "term_ratio": _term_ratio(mine)})
    paper = {(r["arch"], r["bits"], r["scheme"]): r["paper"] for r in cited["cost"]["fixops"]}
    reductions = []
    for arch, bits in sorted({(a, b) for a, b, s in ours if s == APOT and b != FLOAT_BITS}):
        apot, uniform = ours[(arch, bits, APOT)], ours[(arch, bits, UNIFORM)]
        fixed = apot["multiplies"] / 1e6  # first/last layers: the same in both models
        paper_apot, paper_uniform = paper.get((arch, bits, APOT)), paper.get((arch, bits, UNIFORM))
        implied = (None if paper_apot is None else
                   (paper_apot - fixed) / (paper_uniform - fixed))
        reductions.append({"arch": arch, "bits": bits,
                           "ours": _reduction(apot["fixops"], uniform["fixops"]),
                           "paper": None if paper_apot is None else _reduction(paper_apot, paper_uniform),
                           "ours_ratio": _term_ratio(apot), "paper_ratio": implied})
    claim = cited["cost"]["reduction"]
    ours_claim = next(r for r in reductions if (r["arch"], r["bits"]) == (claim["arch"], claim["bits"]))
    apot_claim = ours[(claim["arch"], claim["bits"], APOT)]
    fixed, quantized = apot_claim["multiplies"], apot_claim["fixops_uniform"] - apot_claim["multiplies"]
    # the cost per quantized MAC that would give the paper's reduction with these MAC counts
    needed_ratio = 1 - claim["paper_percent"] / 100 * (fixed + quantized) / quantized
    term_bits = [len(t).bit_length() for t in apot_terms(claim["bits"] - 1, apot_claim["k"])]
    return {"accounting": cost["accounting"], "source": cited["cost"]["source"],
            "fixops": rows, "reductions": reductions,
            "claim": {**claim, "ours": ours_claim["ours"],
                      "ours_ratio": ours_claim["ours_ratio"], "needed_ratio": needed_ratio,
                      "term_bits": term_bits},
            "inferred": inferred_rule(reductions, ours, paper, fixed, quantized),
            "multiply": cost["multiply"], "multiply_claim": cited["cost"]["multiply"],
            "study": cost["study"]}



def inferred_rule(reductions: list[dict], ours: dict, paper: dict, fixed: float,
                  quantized: float) -> dict:
    """The paper's counting rule as its figures imply it: one flat cost per quantized MAC,
    relative to uniform, per scheme (the mean of the factors its APoT rows imply; PoT from its
    one PoT row), and the 22 % claim's reduction under it (``fixed``/``quantized``: the claim
    model's first/last-layer MACs and its quantized layers' uniform FixOPs)."""
    apot_rows = [r for r in reductions if r["paper_ratio"] is not None]
    apot_factor = sum(r["paper_ratio"] for r in apot_rows) / len(apot_rows)
    pot_factor = None
    for (arch, bits, scheme), value in paper.items():
        if scheme == POT and (arch, bits, UNIFORM) in paper:
            first_last = ours[(arch, bits, APOT)]["multiplies"] / 1e6
            pot_factor = (value - first_last) / (paper[(arch, bits, UNIFORM)] - first_last)
    claim_percent = 100.0 * (1 - apot_factor) * quantized / (fixed + quantized)
    return {"apot_factor": apot_factor, "pot_factor": pot_factor, "apot_rows": apot_rows,
            "claim_percent": claim_percent}



def _term_ratio(row: dict) -> float | None:
    """FixOPs per quantized MAC relative to uniform (1 for uniform, None without such MACs)."""
    quantized = row["fixops_uniform"] - row["multiplies"]
    return None if quantized <= 0 else (row["fixops"] - row["multiplies"]) / quantized
