"""Verdicts on the paper's and the reproducibility report's claims, computed from this run.

Each claim (text and source in cited.yaml) has one rule here, stated in words beside its code.
A verdict is "supported", "not supported" or "not testable" with the reason. Accuracy claims are
about full training (full data, 300 epochs): on a reduced-scale preset they are not testable, and
the numbers measured at this scale are still listed. Cost claims do not depend on the scale.
Drops are FP32 best top-1 minus quantized best top-1 (mean over seeds; positive = worse).
"""
from __future__ import annotations

from typing import Callable

SUPPORTED, NOT_SUPPORTED, NOT_TESTABLE = "supported", "not supported", "not testable"


def group_index(summary: dict) -> dict[tuple, dict]:
    """The summary's seed groups by (dataset, arch, schedule, scheme, bits)."""
    return {(g["dataset"], g["arch"], g["schedule"], g["scheme"], g["bits"]): g
            for g in summary["groups"]}


class Evidence:
    """Collects the measured values a rule needs, and which of them are missing."""

    def __init__(self, summary: dict):
        self.groups = group_index(summary)
        self.lines: list[str] = []
        self.missing: list[tuple[str, str]] = []  # (group, why it has no result)

    def _group(self, dataset, arch, schedule, scheme, bits) -> dict | None:
        group = self.groups.get((dataset, arch, schedule, scheme, bits))
        name = f"{dataset} {arch} {schedule} {scheme} {bits}-bit"
        if group is None or group["status"] != "done":
            self.missing.append((name, group["status"] if group else "not in this preset"))
            return None
        return group

    def drop(self, dataset, arch, schedule, bits, scheme="apot") -> float | None:
        group = self._group(dataset, arch, schedule, scheme, bits)
        if group is None or group["best_top1"]["drop"] is None:
            return None
        drop = group["best_top1"]["drop"]
        self.lines.append(f"{dataset} {arch} {schedule} {scheme} {bits}-bit: drop {drop:+.2f} "
                          f"(top-1 {group['best_top1']['mean']:.2f}, n={group['best_top1']['n']})")
        return drop

    def top1(self, dataset, arch, schedule, scheme, bits) -> float | None:
        group = self._group(dataset, arch, schedule, scheme, bits)
        if group is None:
            return None
        value = group["best_top1"]["mean"]
        self.lines.append(f"{dataset} {arch} {schedule} {scheme} {bits}-bit: top-1 {value:.2f} "
                          f"(n={group['best_top1']['n']})")
        return value


def _accuracy_verdict(summary: dict, evidence: Evidence, holds: Callable[[], bool]) -> dict:
    if evidence.missing:
        by_reason: dict[str, list[str]] = {}
        for name, reason in evidence.missing:
            by_reason.setdefault(reason, []).append(name)
        return {"verdict": NOT_TESTABLE, "why": "not run: " + "; ".join(
            f"{', '.join(names)} ({reason})" for reason, names in by_reason.items())}
    if not summary["full_scale"]:
        return {"verdict": NOT_TESTABLE,
                "why": f"preset {summary['preset']} is reduced in scale; the claim is about "
                       f"full training (the values below were measured at this scale)"}
    return {"verdict": SUPPORTED if holds() else NOT_SUPPORTED, "why": ""}


def cifar10_small_drop(summary: dict, cost: dict | None) -> dict:
    rule = ("every drop of ResNet-20 and ResNet-56 at 4, 3 and 2 bits (CIFAR-10, MultiStepLR) "
            "is below 1 point")
    ev = Evidence(summary)
    drops = [ev.drop("cifar10", arch, "multistep", bits)
             for arch in ("resnet20", "resnet56") for bits in (4, 3, 2)]
    return {"rule": rule, "evidence": ev.lines,
            **_accuracy_verdict(summary, ev, lambda: all(d < 1.0 for d in drops))}


def cosine_worse(summary: dict, cost: dict | None) -> dict:
    rule = ("ResNet-20 on CIFAR-10 drops more with CosineAnnealingLR than with MultiStepLR at "
            "both 3 and 2 bits")
    ev = Evidence(summary)
    pairs = [(ev.drop("cifar10", "resnet20", "cosine", bits),
              ev.drop("cifar10", "resnet20", "multistep", bits)) for bits in (3, 2)]
    return {"rule": rule, "evidence": ev.lines,
            **_accuracy_verdict(summary, ev, lambda: all(c > m for c, m in pairs))}


def cifar100_drop_grows(summary: dict, cost: dict | None) -> dict:
    rule = ("on CIFAR-100 (ResNet-20 and ResNet-56) the 4-bit drop is below 1 point and the drop "
            "grows from 4 to 3 to 2 bits")
    ev = Evidence(summary)
    drops = {arch: [ev.drop("cifar100", arch, "multistep", bits) for bits in (4, 3, 2)]
             for arch in ("resnet20", "resnet56")}
    return {"rule": rule, "evidence": ev.lines,
            **_accuracy_verdict(summary, ev, lambda: all(
                d[0] < 1.0 and d[0] < d[1] < d[2] for d in drops.values()))}


def imagenet_5bit(summary: dict, cost: dict | None) -> dict:
    rule = "5-bit ResNet-18 on ImageNet is at least as accurate as its FP32 baseline (drop <= 0)"
    ev = Evidence(summary)
    drop = ev.drop("imagenet", "resnet18", "multistep", 5)
    return {"rule": rule, "evidence": ev.lines,
            **_accuracy_verdict(summary, ev, lambda: drop <= 0)}


def apot_beats_uniform_and_pot(summary: dict, cost: dict | None) -> dict:
    rule = ("with the scheme ablation, APoT's best top-1 is at least uniform's and PoT's for every "
            "CIFAR-10 MultiStepLR model and bit-width that ran all three")
    ev = Evidence(summary)
    keys = sorted({(arch, bits) for (dataset, arch, schedule, scheme, bits) in ev.groups
                   if dataset == "cifar10" and schedule == "multistep" and scheme == "uniform"})
    if not keys:
        return {"rule": rule, "evidence": [], "verdict": NOT_TESTABLE,
                "why": "the scheme ablation did not run (config key scheme_ablation)"}
    wins = []
    for arch, bits in keys:
        values = {s: ev.top1("cifar10", arch, "multistep", s, bits)
                  for s in ("apot", "uniform", "pot")}
        wins.append(values)
    return {"rule": rule, "evidence": ev.lines,
            **_accuracy_verdict(summary, ev, lambda: all(
                v["apot"] >= v["uniform"] and v["apot"] >= v["pot"] for v in wins))}


def _without_cost(rule: str) -> dict:
    return {"rule": rule, "evidence": [], "verdict": NOT_TESTABLE,
            "why": "no cost tables in the summary"}


def cost_22_percent(summary: dict, cost: dict | None) -> dict:
    rule = ("the cost model's FixOPs reduction of 4-bit APoT ResNet-50 against uniform is within "
            "1 point of 22 % (cost claims do not depend on the preset's scale)")
    if cost is None:
        return _without_cost(rule)
    claim = cost["claim"]
    verdict = SUPPORTED if abs(claim["ours"] - claim["paper_percent"]) <= 1 else NOT_SUPPORTED
    evidence = [f"{claim['arch']} {claim['bits']}-bit: {claim['ours']:.1f} % fewer FixOPs than "
                f"uniform (cost per quantized MAC {claim['ours_ratio']:.3f} of uniform; "
                f"{claim['paper_percent']} % would need {claim['needed_ratio']:.3f})"]
    evidence += [f"{r['arch']} {r['bits']}-bit: {r['ours']:.1f} % here, {r['paper']:.1f} % from "
                 f"the paper's Table 3" for r in cost["reductions"] if r["paper"] is not None]
    return {"rule": rule, "evidence": evidence, "verdict": verdict, "why": ""}


def multiply_2x(summary: dict, cost: dict | None) -> dict:
    rule = ("worst-case shift-add steps per multiplication, uniform / APoT (k = 2), equal 2 at "
            "every operand bit-width divisible by k")
    if cost is None:
        return _without_cost(rule)
    rows, speedup = cost["multiply"], cost["multiply_claim"]["speedup"]
    even = [r for r in rows if r["bits"] % r["k"] == 0]
    verdict = (SUPPORTED if all(abs(r["worst_ratio"] - speedup) < 1e-9 for r in even)
               else NOT_SUPPORTED)
    evidence = [f"{r['bits']} bits: worst {r['uniform_worst']} vs {r['apot_worst']} steps "
                f"({r['worst_ratio']:.2f}x), expected {r['uniform_expected']:.2f} vs "
                f"{r['apot_expected']:.2f} ({r['expected_ratio']:.2f}x)" for r in rows]
    return {"rule": rule, "evidence": evidence, "verdict": verdict, "why": ""}


RULES: dict[str, Callable[[dict, dict | None], dict]] = {
    "cifar10_small_drop": cifar10_small_drop,
    "cosine_worse": cosine_worse,
    "cifar100_drop_grows": cifar100_drop_grows,
    "imagenet_5bit": imagenet_5bit,
    "apot_beats_uniform_and_pot": apot_beats_uniform_and_pot,
    "cost_22_percent": cost_22_percent,
    "multiply_2x": multiply_2x,
}


def cited_drops(cited: dict, table_id: str, column: str) -> str:
    """The drops a cited table implies, per architecture: "resnet20 4/3/2-bit: 0.34/0.37/1.88"."""
    table = next(t for t in cited["tables"] if t["id"] == table_id)
    base = {r["arch"]: r[column] for r in table["rows"] if r["bits"] == 32}
    parts = []
    for arch in dict.fromkeys(r["arch"] for r in table["rows"]):
        rows = [r for r in table["rows"] if r["arch"] == arch and r["bits"] != 32]
        if base.get(arch) is None or any(r[column] is None for r in rows):
            continue
        bits = "/".join(str(r["bits"]) for r in rows)
        drops = "/".join(f"{base[arch] - r[column]:+.2f}" for r in rows)
        parts.append(f"{arch} {bits}-bit {drops}")
    return "; ".join(parts)


# Drops in the cited tables that bear on each accuracy claim: (table, column, label)
CITED_EVIDENCE = {
    "cifar10_small_drop": [("table1", "paper", "paper's Table 2 (as cited)"),
                           ("table1", "repro", "reproducibility report's Table 1")],
    "cosine_worse": [("table4", "repro", "reproducibility report, cosine (Table 4)"),
                     ("table1", "repro", "reproducibility report, MultiStepLR (Table 1)")],
    "cifar100_drop_grows": [("table3", "repro", "reproducibility report's Table 3")],
    "imagenet_5bit": [("table2", "paper", "paper (as cited in Table 2)"),
                      ("table2", "repro", "reproducibility report's Table 2")],
}


def evaluate_claims(summary: dict, cited: dict, cost: dict | None) -> list[dict]:
    """One verdict per claim in cited.yaml, in its order; ``cost``: report.cost_section().
    Accuracy claims also list the drops that the cited tables themselves give."""
    results = []
    for claim in cited["claims"]:
        if claim["id"] not in RULES:
            raise KeyError(f"claim {claim['id']!r} in cited.yaml has no rule in apot/claims.py")
        cited_lines = [f"{label}: {cited_drops(cited, table, column)}"
                       for table, column, label in CITED_EVIDENCE.get(claim["id"], [])]
        results.append({**claim, **RULES[claim["id"]](summary, cost), "cited": cited_lines})
    return results
