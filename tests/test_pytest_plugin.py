"""The pytest plugin as a user meets it: a temporary project's tests gate a model, pass and fail as intended."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


def test_plugin_is_registered_through_the_entry_point(pytester):
    pytester.makepyfile("""
        def test_loaded(pytestconfig):
            plugin = pytestconfig.pluginmanager.get_plugin("robustbench_lite")
            assert plugin is not None and plugin.__name__ == "robustbench_lite.pytest_plugin"
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*robustbench_lite: robustness-marked tests skipped (pass --robustness to run them)*"])


@pytest.fixture
def project(pytester, digits_checkpoint):
    """A user's test module: gates on a checkpoint, on an nn.Module, a failing gate, a baseline gate."""
    pytester.makepyfile(test_model=f"""
        import pytest
        import torch
        from robustbench_lite import models
        from robustbench_lite.sources import checkpoints

        CKPT = {str(digits_checkpoint)!r}

        @pytest.mark.robustness
        def test_clean_gate(robustness):
            run = robustness.evaluate(checkpoint=CKPT, suites="clean", limit=48)
            run.check("clean.accuracy >= 0.3")

        @pytest.mark.robustness
        def test_second_gate_same_model(robustness):
            run = robustness.evaluate(checkpoint=CKPT, suites="clean", limit=48)  # served from the cache
            assert 0 < run["clean.ece"] < 1
            run.check("clean.f1_macro >= 0.2", "timings.total >= 0")

        @pytest.mark.robustness
        def test_failing_gate(robustness):
            run = robustness.evaluate(checkpoint=CKPT, suites="clean", limit=48)
            run.check("clean.accuracy >= 0.999", "clean.ece <= 1")

        @pytest.mark.robustness
        def test_module_and_baseline(robustness, tmp_path):
            net, _ = checkpoints.load_checkpoint(CKPT)
            run = robustness.evaluate(module=net, dataset="digits", suites=["clean"], limit=48, model="mine")
            base = robustness.evaluate(checkpoint=CKPT, suites="clean", limit=48)
            assert run.model == "mine" and run["clean.accuracy"] == base["clean.accuracy"]
            run.check("clean.accuracy >= baseline - 0.01", baseline=base)
            run.write_json(tmp_path / "mine.json")
            run.check("clean.accuracy >= baseline", baseline=str(tmp_path / "mine.json"))

        @pytest.mark.robustness
        def test_tensors_as_dataset(robustness):
            # flat grey images of brightness v; the net says 0 (dark), 1 (mid) or 2 (bright) from the pixel sum
            brightness = torch.tensor([0, 128 / 255, 1, 1, 128 / 255, 0])
            images = brightness.view(6, 1, 1, 1).expand(6, 1, 8, 8).contiguous()
            net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
            with torch.no_grad():
                net[1].weight.copy_(torch.tensor([-1.0, 0.0, 1.0]).view(3, 1).expand(3, 64))
                net[1].bias.copy_(torch.tensor([24.0, 0.0, -40.0]))
            assert net(images).argmax(1).tolist() == [0, 1, 2, 2, 1, 0]
            run = robustness.evaluate(module=net, dataset=(images, torch.tensor([0, 1, 2, 0, 1, 2])), suites="clean")
            assert run.n_examples == 6 and 0 <= run["clean.accuracy"] <= 1
            assert run["clean.accuracy"] == pytest.approx(4 / 6)  # images 3 and 5 carry the opposite label

        def test_quick():
            assert True
    """)
    return pytester


def test_robustness_tests_are_skipped_by_default(project):
    result = project.runpytest("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(passed=1, skipped=5)
    result.stdout.fnmatch_lines(["*robustness test: run pytest with --robustness*"])


def test_gates_pass_and_fail_with_a_readable_message(project):
    result = project.runpytest("-p", "no:cacheprovider", "--robustness")
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines([
        "*test_failing_gate*",
        "*1 of 2 robustness gate(s) failed for shufflenetv2_x0_5 on digits (48 test images):",
        "*FAIL  clean.accuracy >= 0.999",
        "*clean.accuracy = 0.*, needs >= 0.999; short by 0.*",
        "*pass  clean.ece <= 1",
        "*robustness: 3 model evaluation(s), 3 served from the session cache*",
    ])
    assert "Traceback" not in result.stdout.str()  # pytrace=False: the table, not the plugin's internals


def test_unknown_path_names_the_valid_ones(pytester, digits_checkpoint):
    pytester.makepyfile(f"""
        def test_typo(robustness):
            run = robustness.evaluate(checkpoint={str(digits_checkpoint)!r}, suites="clean", limit=16)
            run.check("clean.acuracy >= 0.5")
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*RobustEvalError*Did you mean clean.accuracy?*Valid paths: clean.accuracy*"])
