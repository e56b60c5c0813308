"""What each failure becomes: where broken images go and which classes lose most, per condition and overall."""

from __future__ import annotations

import fixed_run
import torch

from robustbench_lite import data
from robustbench_lite.analysis.failures import failure_flow, flow_matrix
from robustbench_lite.api import evaluate


def test_a_hand_counted_flow():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    clean = torch.tensor([0, 0, 1, 2, 2, 2])  # image 3 is wrong already: it is not "newly" wrong
    under = torch.tensor([1, 0, 2, 0, 1, 1])
    matrix = flow_matrix(clean, under, labels, 3)
    assert matrix.tolist() == [[0, 1, 0], [0, 0, 1], [0, 2, 0]]
    flow = failure_flow(clean, under, labels, ["a", "b", "c"])
    assert flow["newly_wrong"] == 4
    assert flow["into"] == {"b": 3, "c": 1}
    # accuracy clean -> under: a 1.0 -> 0.5, b 0.5 -> 0.0, c 1.0 -> 0.0
    assert flow["losing"] == {"c": 1.0, "a": 0.5, "b": 0.5}


def test_the_corruption_suite_records_every_conditions_flow():
    net, digits = fixed_run.load(), data.load("digits", "test")
    result = evaluate(net, digits, "clean,corruptions", corruptions="fog,contrast", severities="1,5")
    flow = result.suites["corruptions"].failure_flow
    assert list(flow["by_condition"]) == ["fog.1", "fog.5", "contrast.1", "contrast.5"]
    assert flow["newly_wrong"] == sum(c["newly_wrong"] for c in flow["by_condition"].values())
    assert flow["newly_wrong"] == sum(map(sum, flow["matrix"])) and flow["classes"] == list(digits.classes)
    assert all(row[i] == 0 for i, row in enumerate(flow["matrix"]))  # a newly wrong image left its class
    # a class loses at most all of its accuracy; the mean drop lists the most hurt class first
    losing = list(flow["losing"].values())
    assert losing == sorted(losing, reverse=True) and all(0 < v <= 1 for v in losing)
    # net accuracy lost = newly wrong - newly right: at least the net loss went wrong
    clean = round(result.suites["clean"].accuracy * len(digits))
    for name, c in flow["by_condition"].items():
        corruption, severity = name.split(".")
        lost = clean - round(result.suites["corruptions"].accuracy[corruption][severity] * len(digits))
        assert c["newly_wrong"] >= lost


def test_the_adversarial_suite_records_where_attacked_images_go():
    net, digits = fixed_run.load(), data.load("digits", "test")
    result = evaluate(net, digits, "clean,adversarial", attack="fgsm,pgd", eps="0.05,0.1")
    block = result.suites["adversarial"]
    assert set(block.failure_flow) == {"fgsm.Linf", "pgd.Linf"}
    n = len(digits)
    for name in ("fgsm", "pgd"):
        flow = block.failure_flow[f"{name}.Linf"]
        # the images an attack breaks at its largest budget are the clean-correct images it fools
        broken = round((block.clean_accuracy - block.robust_accuracy[f"{name}.Linf[0.1]"]) * n)
        assert flow["newly_wrong"] == broken and sum(flow["into"].values()) <= broken
        assert list(flow["into"].values()) == sorted(flow["into"].values(), reverse=True)
