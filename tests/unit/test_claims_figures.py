"""Claim verdicts from data by their stated rules, and the report's figures."""
import re


import pytest

from apot.claims import (INCONCLUSIVE, NOT_SUPPORTED, NOT_TESTABLE, RULES, SUPPORTED, cited_drops,
                         decide, evaluate_claims, margin)
from apot.figures import accuracy_by_bits_svg, curves_svg, level_sets_svg
from apot.report import cost_section, load_cited
from apot.quant.schemes import magnitude_levels

CITED = load_cited()
BASE_TOP1 = 90.0


def group(dataset, arch, schedule, scheme, bits, top1, drop, start="scratch", source="download",
          std=0.0, n=1, data=None):
    return {"dataset": dataset, "arch": arch, "schedule": schedule, "scheme": scheme,
            "bits": bits, "start": start, "status": "done", "data": [data or dataset],
            "data_source": [source], "seeds": list(range(n)), "epochs": [1],
            "best_top1": {"mean": top1, "std": std, "n": n, "drop": drop}}


def full_summary(drops: dict, full_scale=True, source="download", start="scratch",
                 schemes=None) -> dict:
    """A summary whose APoT groups have the given drops {(dataset, arch, schedule, bits): d},
    each with its FP32 group at 90 %; ``schemes`` adds other schemes' top-1
    {(scheme, bits): top-1} to every (dataset, arch, schedule)."""
    groups = [group(d, a, s, "apot", b, BASE_TOP1 - drop, drop, start, source)
              for (d, a, s, b), drop in drops.items()]
    for d, a, s in dict.fromkeys(k[:3] for k in drops):
        groups.append(group(d, a, s, "fp32", 32, BASE_TOP1, None, start, source))
        for (scheme, bits), top1 in (schemes or {}).items():
            groups.append(group(d, a, s, scheme, bits, top1, BASE_TOP1 - top1, start, source))
    return {"preset": "paper" if full_scale else "quick", "full_scale": full_scale,
            "groups": groups, "data": {}}


CIFAR10 = {("cifar10", a, "multistep", b): 0.5 for a in ("resnet20", "resnet56")
           for b in (4, 3, 2)}


def warm(drops=(0.4, 1.5, 9.0), uniform=(88.0, 85.0, 75.0), pot=(86.0, 84.0, 81.0)):
    """A warm-start summary (quick preset, offline JPEG copy): APoT drops at 4/3/2 bits and
    uniform/PoT top-1 at the same widths, all from the authors' FP32 model."""
    summary = full_summary({("cifar10", "resnet20", "cosine", b): d
                            for b, d in zip((4, 3, 2), drops)}, full_scale=False,
                           source="mirror", start="authors",
                           schemes={**{("uniform", b): t for b, t in zip((4, 3, 2), uniform)},
                                    **{("pot", b): t for b, t in zip((4, 3, 2), pot)}})
    summary["authors"] = {"data": "cifar10", "evals": [
        {"bits": 4, "top1": 89.8, "n": 10000}, {"bits": 3, "top1": 90.1, "n": 10000}]}
    return summary


def test_every_cited_claim_has_a_rule():
    assert [c["id"] for c in CITED["claims"]] == list(RULES)


@pytest.mark.parametrize("difference, noise, outcome", [
    (0.31, 0.3, "holds"), (0.3, 0.3, "within noise"), (-0.1, 0.3, "within noise"),
    (-0.31, 0.3, "fails"), (1.0, 0.8, "holds")])
def test_decide_needs_more_than_the_margin(difference, noise, outcome):
    assert decide(difference, noise) == outcome


def test_margin_is_the_floor_or_twice_the_larger_seed_std():
    one = group("cifar10", "resnet20", "multistep", "apot", 4, 90.0, 0.0)
    assert margin(one) == 0.3
    three = group("cifar10", "resnet20", "multistep", "apot", 3, 90.0, 0.0, std=0.4, n=3)
    assert margin(one, three) == pytest.approx(0.8)
    one_seed_std = group("cifar10", "resnet20", "multistep", "apot", 2, 90.0, 0.0, std=0.4)
    assert margin(one_seed_std) == 0.3  # a std only counts with more than one seed


# (claim, summary, expected verdict, text expected in "why")
FULL_SCALE_CASES = [
    ("cifar10_small_drop", full_summary(CIFAR10), SUPPORTED, ""),
    ("cifar10_small_drop", full_summary({**CIFAR10, ("cifar10", "resnet56", "multistep", 2): 1.4}),
     NOT_SUPPORTED, "resnet56 2-bit drop +1.40 vs 1 (margin 0.30): fails"),
    ("cifar10_small_drop", full_summary({**CIFAR10, ("cifar10", "resnet56", "multistep", 2): 0.9}),
     INCONCLUSIVE, "within noise"),
    ("cifar10_small_drop", full_summary(CIFAR10, full_scale=False), NOT_TESTABLE,
     "reduced in scale"),
    # full scale on the JPEG copy: the drop is judged within the run, and says so
    ("cifar10_small_drop", full_summary(CIFAR10, source="mirror"), SUPPORTED,
     "offline JPEG copy (drops and orderings only"),
    ("cosine_worse", full_summary(CIFAR10), NOT_TESTABLE, "not run"),
    ("cosine_worse", full_summary({**CIFAR10, ("cifar10", "resnet20", "cosine", 3): 0.9,
                                   ("cifar10", "resnet20", "cosine", 2): 2.3}), SUPPORTED, ""),
    ("cosine_worse", full_summary({**CIFAR10, ("cifar10", "resnet20", "cosine", 3): 0.6,
                                   ("cifar10", "resnet20", "cosine", 2): 2.3}), INCONCLUSIVE,
     "3-bit: cosine drop minus MultiStepLR drop +0.10"),
    ("cosine_worse", full_summary({**CIFAR10, ("cifar10", "resnet20", "cosine", 3): 0.1,
                                   ("cifar10", "resnet20", "cosine", 2): 2.3}), NOT_SUPPORTED, ""),
    ("cifar100_drop_grows", full_summary({("cifar100", a, "multistep", b): d
                                          for a in ("resnet20", "resnet56")
                                          for b, d in ((4, 0.5), (3, 1.5), (2, 5.0))}),
     SUPPORTED, ""),
    ("cifar100_drop_grows", full_summary({("cifar100", a, "multistep", b): d
                                          for a in ("resnet20", "resnet56")
                                          for b, d in ((4, 0.5), (3, 0.6), (2, 5.0))}),
     INCONCLUSIVE, "3-bit minus 4-bit drop +0.10"),
    ("imagenet_5bit", full_summary({("imagenet", "resnet18", "multistep", 5): -0.7},
                                   source="folder"), SUPPORTED, "top-1 90.70 vs 70.9"),
]


@pytest.mark.parametrize("claim, summary, verdict, why", FULL_SCALE_CASES)
def test_full_scale_claims_follow_their_rules(claim, summary, verdict, why):
    result = RULES[claim](summary, None)
    assert result["verdict"] == verdict, result
    assert why in result["why"]


def test_imagenet_checks_the_absolute_figure_and_the_drop():
    def summary(top1, fp32):
        s = full_summary({("imagenet", "resnet18", "multistep", 5): fp32 - top1},
                         source="folder")
        for g in s["groups"]:
            g["best_top1"]["mean"] = top1 if g["bits"] == 5 else fp32
        return s
    assert RULES["imagenet_5bit"](summary(70.9, 70.2), None)["verdict"] == SUPPORTED
    low = RULES["imagenet_5bit"](summary(70.3, 69.5), None)  # drop fine, absolute 0.6 short
    assert low["verdict"] == NOT_SUPPORTED and "top-1 70.30 vs 70.9 (margin 0.50): fails" in low["why"]
    flat = RULES["imagenet_5bit"](summary(70.5, 70.4), None)  # reaches 70.9 - 0.5, drop -0.1
    assert flat["verdict"] == INCONCLUSIVE
    jpeg = full_summary({("imagenet", "resnet18", "multistep", 5): -0.7}, source="mirror")
    assert RULES["imagenet_5bit"](jpeg, None)["verdict"] == NOT_TESTABLE
    # the chain is found whatever its start and schedule (the quick preset's: torchvision,
    # cosine_steps), and an unconfigured one says why it did not run
    other = full_summary({("imagenet", "resnet18", "cosine_steps", 5): -0.7}, source="folder",
                         start="torchvision")
    assert RULES["imagenet_5bit"](other, None)["verdict"] == SUPPORTED
    for g in other["groups"]:
        g["status"] = "not configured: no ImageNet folder (set imagenet_root)"
    assert "not configured: no ImageNet folder" in RULES["imagenet_5bit"](other, None)["why"]


def test_a_full_scale_run_on_the_jpeg_copy_gets_no_verdict_on_absolute_figures():
    jpeg = full_summary({("imagenet", "resnet18", "multistep", 5): -0.7}, source="mirror")
    result = RULES["imagenet_5bit"](jpeg, None)
    assert result["verdict"] == NOT_TESTABLE and "offline JPEG copy" in result["why"]


def test_scheme_claim_never_compares_apot_with_pot_at_2_bits():
    schemes = {("uniform", 4): 89.0, ("uniform", 3): 89.0, ("uniform", 2): 89.0,
               ("pot", 4): 88.0, ("pot", 3): 88.0, ("pot", 2): 95.0}  # PoT 2-bit far ahead
    summary = full_summary(CIFAR10, schemes=schemes)
    result = RULES["apot_beats_uniform_and_pot"](summary, None)
    assert result["verdict"] == SUPPORTED, result
    assert not any("2-bit APoT minus pot" in part for part in result["why"].split("; "))
    assert "resnet20 2-bit APoT minus uniform" in result["why"]
    summary = full_summary(CIFAR10, schemes={**schemes, ("uniform", 3): 89.6})
    assert RULES["apot_beats_uniform_and_pot"](summary, None)["verdict"] == INCONCLUSIVE
    assert "scheme ablation did not run" in RULES["apot_beats_uniform_and_pot"](
        full_summary(CIFAR10), None)["why"]


# (claim, summary, verdict, text in why)
WARM_CASES = [
    ("warm_within_1pt", warm(), NOT_SUPPORTED, "3-bit drop +1.50 vs 1 (margin 0.30): fails"),
    ("warm_within_1pt", warm(drops=(0.4, 0.6, 9.0)), SUPPORTED, ""),
    ("warm_within_1pt", warm(drops=(0.4, 0.9, 9.0)), INCONCLUSIVE, "within noise"),
    ("warm_drop_grows", warm(), SUPPORTED, "offline JPEG copy"),
    ("warm_drop_grows", warm(drops=(0.4, 0.5, 9.0)), INCONCLUSIVE, ""),
    ("warm_apot_beats_uniform", warm(), SUPPORTED, ""),   # 89.6/88.5/81 vs 88/85/75
    ("warm_apot_beats_uniform", warm(uniform=(89.5, 85.0, 75.0)), INCONCLUSIVE,
     "4-bit APoT minus uniform +0.10"),
    ("warm_apot_beats_uniform", warm(uniform=(88.0, 85.0, 82.0)), NOT_SUPPORTED, ""),
    # PoT at 2 bits (81.0) is level with APoT's 81.0, and never compared
    ("warm_apot_beats_pot", warm(pot=(86.0, 84.0, 99.0)), SUPPORTED, ""),
    ("warm_apot_beats_pot", warm(pot=(86.0, 88.6, 81.0)), INCONCLUSIVE, ""),
    ("warm_matches_authors", warm(), SUPPORTED, "the authors' top-1 minus ours +0.20"),
    ("warm_matches_authors", warm(drops=(-3.0, 1.6, 9.0)), SUPPORTED, "minus ours -3.20"),
    ("warm_matches_authors", warm(drops=(1.0, 1.6, 9.0)), INCONCLUSIVE, ""),  # 89.0 vs 89.8
    ("warm_matches_authors", warm(drops=(1.5, 1.6, 9.0)), INCONCLUSIVE, ""),  # 88.5 vs 89.8
    ("warm_matches_authors", warm(drops=(2.0, 2.1, 9.0)), NOT_SUPPORTED, ""),
    ("warm_within_1pt", full_summary(CIFAR10), NOT_TESTABLE, "no chain starts from"),
]


@pytest.mark.parametrize("claim, summary, verdict, why", WARM_CASES)
def test_warm_start_claims_follow_their_rules(claim, summary, verdict, why):
    result = RULES[claim](summary, None)
    assert result["verdict"] == verdict, result
    assert why in result["why"]
    if verdict != NOT_TESTABLE:
        assert "Seeds: 0 (n=1" in result["basis"] and "offline JPEG copy" in result["basis"]
        assert "reduced scale" in result["basis"]
        assert "chains started from the authors' released model" in result["basis"]


def test_a_quantized_group_without_its_fp32_baseline_is_not_testable():
    summary = warm()
    for g in summary["groups"]:
        if g["scheme"] == "fp32":
            g["status"] = "missing: the run has not completed"
    result = RULES["warm_within_1pt"](summary, None)
    assert result["verdict"] == NOT_TESTABLE and "fp32 32-bit" in result["why"]


def test_no_checks_at_all_is_not_a_verdict():
    from apot.claims import _combine
    assert _combine([]) == NOT_TESTABLE
    assert _combine(["holds", "within noise"]) == INCONCLUSIVE
    assert _combine(["holds", "fails", "within noise"]) == NOT_SUPPORTED


def test_warm_pot_claim_never_lists_2_bits():
    result = RULES["warm_apot_beats_pot"](warm(), None)
    assert "2-bit" not in result["why"] and "3-bit APoT minus PoT" in result["why"]


def test_authors_match_needs_the_same_test_images():
    summary = warm()
    summary["authors"]["data"] = "cifar10_small"
    result = RULES["warm_matches_authors"](summary, None)
    assert result["verdict"] == NOT_TESTABLE and "other test images" in result["why"]


def test_cost_claims_show_both_rules_and_every_view():
    from apot.cost import cost_tables
    summary = {"cost": cost_tables([("resnet20", 4)])}
    cost = cost_section(summary, CITED)
    result = RULES["cost_22_percent"]({}, cost)
    # this accounting gives 14.9 %, the paper's inferred flat factor 22.x %: they disagree
    assert result["verdict"] == INCONCLUSIVE, result
    assert "does not state how it counts" in result["why"]
    assert abs(cost["inferred"]["claim_percent"] - 22) <= 1
    assert 0.74 < cost["inferred"]["apot_factor"] < 0.76
    assert 0.69 < cost["inferred"]["pot_factor"] < 0.71
    assert any("fitted to the paper's Table 3" in line for line in result["evidence"])
    assert any("also gives 0.75 for the paper's 5- and 3-bit APoT rows" in line
               for line in result["evidence"])
    two = RULES["multiply_2x"]({}, cost)
    assert two["verdict"] == NOT_SUPPORTED
    assert any(line.startswith("worst case, operand magnitude bits B divisible by k") and "2.00x" in line
               for line in two["evidence"])
    assert any(line.startswith("network FixOPs") for line in two["evidence"])
    assert "only as the worst-case step count" in two["why"] and "network FixOPs 1.18x to 1.27x" in two["why"]
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
