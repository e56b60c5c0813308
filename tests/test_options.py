"""Typed suite options: every option of every suite round-trips through flags, YAML and to_args, and every
option error exits 2 with one line before any work starts."""

from __future__ import annotations

import argparse
import json

import pytest

from robustbench_lite import cli
from robustbench_lite.errors import RobustEvalError
from robustbench_lite.options import comma_list
from robustbench_lite.suites import SUITES, typed_options


@pytest.fixture()
def option_files(tmp_path, monkeypatch):
    """The files some options' examples name: a reference results JSON, a natural-shift folder."""
    monkeypatch.chdir(tmp_path)
    names = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "fog")
    accuracy = {c: {str(s): 0.5 for s in range(1, 6)} for c in names}
    (tmp_path / "reference.json").write_text(json.dumps({"schema_version": 1, "corruptions": {"accuracy": accuracy,
                                                                         "clean_accuracy": 0.9}}))
    (tmp_path / "natural-set" / "class-a").mkdir(parents=True)
    return tmp_path


def _example_args(suite: str) -> list[str]:
    flags = SUITES.entry(suite).Options.flags()
    assert all(f.example for f in flags.values()), f"every {suite} option declares an example"
    return [arg for f in flags.values() for arg in (f.flag, f.example)]


def _parse(suite: str, argv: list[str]):
    parser = argparse.ArgumentParser()
    SUITES.entry(suite).Options.add_arguments(parser.add_argument_group(suite))
    return SUITES.entry(suite).Options.from_args(parser.parse_args(argv))


@pytest.mark.parametrize("suite", SUITES.list())
def test_every_option_round_trips_through_to_args_and_yaml(suite, option_files):
    cls = SUITES.entry(suite).Options
    opts = _parse(suite, _example_args(suite))
    assert sorted(opts.set_fields()) == sorted(cls.flags()), "every example differs from the default"
    # to_args is what sweep launchers and the report's command line use: the flags must rebuild the options
    assert _parse(suite, opts.to_args()) == opts
    # YAML / Python API: field names and flag names (snake or kebab) give the same options
    assert cls.from_mapping(opts.to_dict()) == opts
    by_flag = {f.flag.lstrip("-"): f.example for f in cls.flags().values()}
    assert cls.from_mapping(by_flag) == opts
    assert json.loads(json.dumps(opts.to_dict())) == opts.to_dict()


@pytest.mark.parametrize("suite", SUITES.list())
def test_defaults_set_nothing(suite):
    opts = SUITES.entry(suite).Options()
    assert opts.set_fields() == [] and opts.to_args() == [] and opts.to_dict() == {}


def test_unknown_yaml_key_names_the_valid_ones():
    with pytest.raises(RobustEvalError, match=r"unknown adversarial option 'epss'.*valid: .*eps"):
        typed_options(["adversarial"], {"adversarial": {"epss": 0.1}})


def test_options_for_a_suite_not_run_are_an_error():
    with pytest.raises(RobustEvalError, match="corruptions suite is not selected"):
        typed_options(["clean"], {"corruptions": {"severities": "1,2"}})


def test_comma_list_is_the_one_list_parser():
    assert comma_list("a, b,a", "--x", "a,b") == ("a", "b")
    assert comma_list(["a,b", "c"], "--x", "a") == ("a", "b", "c")
    assert comma_list((0.5, 2), "--x", "1") == ("0.5", "2")
    for bad in ("a,,b", "a,", "", [], ","):
        with pytest.raises(RobustEvalError, match="--x"):
            comma_list(bad, "--x", "a,b")


BAD_OPTIONS = [
    (["--suite", "adversarial", "--eps", "-1"], "must be > 0"),
    (["--suite", "adversarial", "--eps", "2", "--norm", "Linf"], "> 1 for Linf"),
    (["--suite", "adversarial", "--steps", "0"], "--steps must be an integer >= 1"),
    (["--suite", "adversarial", "--norm", "L3"], "unknown norm"),
    (["--suite", "adversarial", "--attack", "pgdd"], "unknown attack"),
    (["--suite", "adversarial", "--alpha", "x"], "--alpha must be a positive step size"),
    (["--suite", "adversarial", "--restarts", "-2"], "--restarts must be an integer >= 1"),
    (["--suite", "adversarial", "--norm", "Linf,L2", "--eps", "0.1"], "ambiguous with several norms"),
    (["--suite", "clean,corruptions", "--severities", "7"], "--severities must be an integer in 1..5"),
    (["--suite", "corruptions", "--corruptions", "fogg"], "unknown corruption 'fogg'"),
    (["--suite", "corruptions", "--profile", "huge"], "--profile 'huge' is not valid"),
    (["--suite", "corruptions", "--corruption-backend", "opencv"], "--corruption-backend 'opencv' is not valid"),
    (["--suite", "corruptions", "--mce-reference", "missing.json"], "missing.json does not exist"),
    (["--suite", "shift", "--shift-splits", "covariate/nope"], "unknown shift split"),
    (["--suite", "shift", "--shift-alpha", "0"], "--shift-alpha must be > 0"),
    (["--suite", "shift", "--shift-draws", "0"], "--shift-draws must be an integer >= 1"),
    (["--suite", "shift", "--shift-intensities", "9"], "--shift-intensities must be an integer in 1..5"),
    (["--suite", "shift", "--shift-natural", "no-such-folder"], "is not a directory"),
    (["--suite", "efficiency", "--latency-runs", "0"], "--latency-runs must be an integer >= 1"),
    (["--suite", "efficiency", "--throughput-batch-size", "x"], "--throughput-batch-size takes an integer"),
    (["--suite", "clean", "--severities", "3"], "applies to the corruptions suite, which is not selected"),
    (["--seed", "-7"], "--seed: expected an integer >= 0"),
    (["--suite", "clean", "--limit", "0"], "--limit: expected an integer >= 1"),
]


@pytest.mark.parametrize("argv, needle", BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_option_errors_exit_2_with_one_line_before_any_work(argv, needle, capsys, tmp_path, monkeypatch):
    # No checkpoint is given, so any work would start by loading Fashion-MNIST and training the
    # baseline into this empty cache: the error must come first, alone.
    monkeypatch.setenv("ROBUST_EVAL_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("robust-eval: error: "), err
    assert needle in lines[0]
    assert out == "" and not (tmp_path / "home").exists()


@pytest.mark.parametrize("command", ["compare", "sweep"])
def test_option_errors_in_compare_and_sweep_exit_2_first(command, capsys, tmp_path, digits_checkpoint):
    argv = ([command, str(digits_checkpoint), "--suite", "corruptions", "--severities", "0"] if command == "compare"
            else [command, "--models", "shufflenetv2_x0_5", "--datasets", "digits", "--suites", "corruptions",
                  "--severities", "0", "--output-dir", str(tmp_path / "sweep")])
    code = cli.main(argv)
    _, err = capsys.readouterr()
    assert code == 2 and err.strip().splitlines() == [err.strip()] and "--severities must be an integer in 1..5" in err
    assert not (tmp_path / "sweep").exists()


def test_the_report_rebuilds_an_api_run_command_with_its_suite_options():
    from robustbench_lite.report.render import reproduce_command

    config = {"suites": ["adversarial", "corruptions"],
              "suite_options": {"adversarial": {"eps": [0.05, 0.1], "steps": 3}, "corruptions": {"severities": [1, 5]}}}
    command = reproduce_command(config, {"model": "resnet18", "dataset": "digits", "seed": 0})
    assert command.endswith("--seed 0 --eps 0.05,0.1 --steps 3 --severities 1,5")
