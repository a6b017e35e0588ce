"""Claim verdicts from data by their stated rules, and the report's figures."""
import re


from apot.claims import (NOT_SUPPORTED, NOT_TESTABLE, SUPPORTED, RULES, cited_drops,
                         evaluate_claims)
from apot.figures import accuracy_by_bits_svg, curves_svg, level_sets_svg
from apot.report import cost_section, load_cited
from apot.quant.levels import magnitude_levels

CITED = load_cited()


def group(dataset, arch, schedule, scheme, bits, top1, drop):
    return {"dataset": dataset, "arch": arch, "schedule": schedule, "scheme": scheme,
            "bits": bits, "status": "done",
            "best_top1": {"mean": top1, "std": 0.0, "n": 1, "drop": drop}}


def full_summary(drops: dict, full_scale=True) -> dict:
    """A summary whose APoT groups have the given drops {(dataset, arch, schedule, bits): d}."""
    groups = [group(d, a, s, "apot", b, 90.0 - drop, drop) for (d, a, s, b), drop in drops.items()]
    return {"preset": "paper" if full_scale else "quick", "full_scale": full_scale,
            "groups": groups}


CIFAR10 = {("cifar10", a, "multistep", b): 0.5 for a in ("resnet20", "resnet56")
           for b in (4, 3, 2)}


def test_every_cited_claim_has_a_rule():
    assert [c["id"] for c in CITED["claims"]] == list(RULES)


def test_small_drop_claim_follows_its_rule():
    summary = full_summary(CIFAR10)
    assert RULES["cifar10_small_drop"](summary, None)["verdict"] == SUPPORTED
    worse = full_summary({**CIFAR10, ("cifar10", "resnet56", "multistep", 2): 1.2})
    result = RULES["cifar10_small_drop"](worse, None)
    assert result["verdict"] == NOT_SUPPORTED
    assert "cifar10 resnet56 multistep apot 2-bit: drop +1.20 (top-1 88.80, n=1)" in result["evidence"]


def test_accuracy_claims_are_not_testable_at_reduced_scale_or_without_runs():
    reduced = RULES["cifar10_small_drop"](full_summary(CIFAR10, full_scale=False), None)
    assert reduced["verdict"] == NOT_TESTABLE and "reduced in scale" in reduced["why"]
    assert len(reduced["evidence"]) == 6  # the measured values are still listed
    missing = RULES["cosine_worse"](full_summary(CIFAR10), None)
    assert missing["verdict"] == NOT_TESTABLE and "not run" in missing["why"]


def test_cosine_and_cifar100_rules():
    drops = {**CIFAR10, ("cifar10", "resnet20", "cosine", 3): 0.8,
             ("cifar10", "resnet20", "cosine", 2): 2.3}
    assert RULES["cosine_worse"](full_summary(drops), None)["verdict"] == SUPPORTED
    drops[("cifar10", "resnet20", "cosine", 3)] = 0.4  # better than MultiStepLR's 0.5
    assert RULES["cosine_worse"](full_summary(drops), None)["verdict"] == NOT_SUPPORTED
    grows = {("cifar100", a, "multistep", b): d for a in ("resnet20", "resnet56")
             for b, d in ((4, 0.5), (3, 1.5), (2, 5.0))}
    assert RULES["cifar100_drop_grows"](full_summary(grows), None)["verdict"] == SUPPORTED
    grows[("cifar100", "resnet56", "multistep", 4)] = 1.6
    assert RULES["cifar100_drop_grows"](full_summary(grows), None)["verdict"] == NOT_SUPPORTED


def test_scheme_claim_needs_the_ablation():
    summary = full_summary(CIFAR10)
    assert "scheme ablation did not run" in RULES["apot_beats_uniform_and_pot"](
        summary, None)["why"]
    for scheme, top1 in (("uniform", 89.0), ("pot", 88.0)):
        summary["groups"] += [group("cifar10", "resnet20", "multistep", scheme, b, top1, 1.0)
                              for b in (4, 3, 2)]
    assert RULES["apot_beats_uniform_and_pot"](summary, None)["verdict"] == SUPPORTED
    summary["groups"][-1]["best_top1"]["mean"] = 95.0  # PoT 2-bit beats APoT's 89.5
    assert RULES["apot_beats_uniform_and_pot"](summary, None)["verdict"] == NOT_SUPPORTED


def test_cost_claims_use_the_cost_section():
    from apot.cost import cost_tables
    summary = {"cost": cost_tables([("resnet20", 4)])}
    cost = cost_section(summary, CITED)
    result = RULES["cost_22_percent"]({}, cost)
    assert result["verdict"] == NOT_SUPPORTED  # 14.9 % under this accounting
    assert result["evidence"][0].startswith(f"resnet50 4-bit: {cost['claim']['ours']:.1f} %")
    assert RULES["multiply_2x"]({}, cost)["verdict"] == SUPPORTED
    assert RULES["cost_22_percent"]({}, None)["verdict"] == NOT_TESTABLE


def test_cited_drops_are_computed_from_the_cited_tables():
    # reproducibility report, Table 1: ResNet-20 92.90 -> 92.56 / 92.53 / 91.02
    assert cited_drops(CITED, "table1", "repro").startswith(
        "resnet20 4/3/2-bit +0.34/+0.37/+1.88")
    claims = evaluate_claims(full_summary(CIFAR10), CITED, None)
    assert any("+1.88" in line for line in claims[0]["cited"])


def test_level_figure_draws_every_level_and_is_deterministic():
    svg = level_sets_svg()
    assert svg.startswith("<svg") and svg == level_sets_svg()
    # no date, and no address other than the SVG/XLink namespace names
    assert "Date" not in svg and "<metadata>" not in svg
    assert set(re.findall(r"https?://[^\"\s]+", svg)) <= {"http://www.w3.org/2000/svg",
                                                        "http://www.w3.org/1999/xlink"}
    # one line collection per (bits, scheme), one segment per level
    collections = [chunk.split("</g>", 1)[0]
                   for chunk in re.split(r'<g id="[^"]*LineCollection', svg)[1:]]
    expected = [len(magnitude_levels(s, b)) for b in (3, 4) for s in ("uniform", "pot", "apot")]
    assert [chunk.count("<path") for chunk in collections] == expected


def test_figure_ids_are_unique_across_figures():
    ids = [re.findall(r'\bid="([^"]+)"', svg) for svg in (
        level_sets_svg(), curves_svg("t", [("FP32", 32, [1.0, 2.0])]))]
    assert ids[0] and ids[1] and not set(ids[0]) & set(ids[1])


def test_curve_and_bits_figures_contain_their_labels():
    svg = curves_svg("cifar10, resnet20", [("FP32", 32, [10.0, 20.0]), ("apot 4-bit", 4, [21.0])])
    assert "FP32" in svg and "apot 4-bit" in svg
    rows = [{"bits": 32, "paper": 91.6, "repro": 92.9, "ours": None},
            {"bits": 4, "paper": 92.3, "repro": 92.56, "ours": 80.0}]
    svg = accuracy_by_bits_svg("Table 1", [("resnet20", rows)])
    assert "this run" in svg and "4-bit" in svg
