"""HTML report: every section from every suite's result types, optional sections, the example grid from a
live run and from JSON alone, comparisons of several runs, and the page in a real headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import tempfile

import pytest
import torch

from robustbench_lite import cli, gates
from robustbench_lite.efficiency import EfficiencyResult
from robustbench_lite.metrics import classification_report
from robustbench_lite.report import render, write_html
from robustbench_lite.results import EvaluationResult
from robustbench_lite.suites.clean import CleanResult
from robustbench_lite.suites.corruptions import CorruptionResult
from robustbench_lite.suites.shift import LevelScore, ShiftResult, SplitScore

SECTIONS = ("scorecard", "clean", "adversarial", "corruptions", "shift", "efficiency", "reproduce")


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def synthetic(model: str = "tiny<net>", latency: float = 3.0, size: float = 1.0, level: float = 0.6) -> dict:
    """A results dict with all five suites, built from the suites' own result classes."""
    from test_gates import adversarial_block

    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (200,), generator=g)
    logits = torch.randn(200, 10, generator=g)
    logits[torch.arange(200), labels] += 2.5
    report = classification_report(logits, labels, 10)
    classes = [f"class {i}" for i in range(10)]
    names = ["gaussian_noise", "defocus_blur", "fog", "contrast"]
    acc = {c: {str(s): max(0.0, level - 0.08 * s - 0.05 * i) for s in range(1, 6)} for i, c in enumerate(names)}
    corr = CorruptionResult(
        profile="cifar", backend="native", corruptions=names, severities=[1, 2, 3, 4, 5], clean_accuracy=0.8,
        accuracy=acc, mean_accuracy=level - 0.3, accuracy_by_severity={str(s): level - 0.08 * s for s in range(1, 6)},
        accuracy_by_family={"noise": 0.5, "blur": 0.4, "weather": 0.3, "digital": 0.35},
        ce={c: 0.5 for c in names}, mce=0.5, relative_ce={c: 0.2 for c in names}, relative_mce=0.2, normalised=False,
        mce_reference=None)
    levels = [LevelScore(f"{k}", {"intensity": k}, 200, 0.7 - 0.1 * k, 0.1, 0.9, 0.6, 0.1 * k,
                         report["per_class_accuracy"], report["reliability"]) for k in (1, 3)]
    split = SplitScore(name="covariate/rotation", kind="covariate", description="rotated", accuracy=0.5, ece=0.1,
                       nll=1.0, f1_macro=0.5, drop=0.3, reference="clean", reference_accuracy=0.8, accuracy_ratio=0.62,
                       worst_level="3", worst_level_accuracy=0.4, classes=classes,
                       classes_losing_most=[{"class": "class 3", "reference_accuracy": 0.9, "accuracy": 0.2,
                                             "drop": 0.7}],
                       levels=levels)
    shift = ShiftResult(n_examples=200, classes=classes, clean_accuracy=0.8, clean_ece=0.05, clean_nll=0.6,
                        clean_f1_macro=0.8, mean_accuracy=0.5, worst_accuracy=0.5, worst_split="covariate/rotation",
                        accuracy_ratio=0.62, worst_ratio=0.62, splits={split.name: split},
                        skipped={"covariate/colour": "needs colour images"})
    eff = EfficiencyResult(params=350_000, trainable_params=350_000, flops=780_000, macs=390_000, size_mb=size,
                           input_shape=[1, 1, 8, 8], latency_ms=latency, latency_ms_p90=latency * 1.2,
                           throughput=2000.0, throughput_batch_size=256, peak_memory_mb=4.0, memory_method="profiler",
                           device="cpu", threads=2)
    result = EvaluationResult(model=model, dataset="digits", n_examples=200, seed=0,
                              config={"suites": ["clean"], "limit": 200, "seed": 0}, environment={"torch": "2"},
                              checkpoint={"path": "/ckpt.pt"}, timings={"clean": 1.0, "total": 2.0})
    result.suites = {"clean": CleanResult(n_examples=200, classes=classes, **report), "shift": shift,
                     "corruptions": corr, "efficiency": eff}
    data = result.to_dict()
    data["suites"] = ["clean", "adversarial", "corruptions", "shift", "efficiency"]
    data["adversarial"] = adversarial_block()
    outcomes = gates.check(gates.parse_all(["clean.accuracy >= 0.99", "efficiency.latency_ms <= 50"]), data)
    data["gates"] = gates.gates_block(outcomes, None)
    return data


def check_self_contained(html: str) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), "external asset"
    assert "<link" not in html and "@import" not in html and "url(" not in html
    assert "@media print" in html


def test_every_section_from_the_suites_result_types():
    html = render([synthetic()])
    for section in SECTIONS:
        assert f'data-section="{section}"' in html, section
    assert "could not be drawn" not in html
    assert html.count("data:image/svg+xml;base64,") == 7  # confusion, reliability x2, eps curves, heatmap, bars x2
    check_self_contained(html)
    assert "tiny&lt;net&gt;" in html and "tiny<net>" not in html  # autoescaped
    assert "1 of 2 gates failed" in html and 'data-status="fail"' in html and 'data-status="pass"' in html
    assert "adversarial.pgd.Linf[0.1].robust_accuracy" in html  # the gate path of each attack row
    assert "covariate/colour" in html and "needs colour images" in html  # skipped shift splits explained


def test_missing_suites_are_left_out_and_odd_shapes_noted():
    data = synthetic()
    for suite in ("shift", "efficiency"):
        del data[suite]
    data["adversarial"] = {"results": "not a list", "worst_case": 3}
    html = render([data])
    assert 'data-section="shift"' not in html and 'data-section="efficiency"' not in html
    assert 'data-suite="shift" data-status="not run"' in html
    assert 'data-section="corruptions"' in html and "could not be drawn from the results" in html
    only_clean = {k: v for k, v in synthetic().items() if k not in ("adversarial", "corruptions", "shift", "gates")}
    html = render([only_clean])
    assert "No gates were checked" in html and 'data-section="adversarial"' not in html


@pytest.mark.slow
def test_report_command_compares_several_runs(tmp_path, capsys):
    paths = []
    for i, (lat, size, level) in enumerate([(3.0, 1.0, 0.6), (1.0, 0.5, 0.5), (5.0, 2.0, 0.9)]):
        path = tmp_path / f"r{i}.json"
        path.write_text(json.dumps(synthetic(f"model{i}", lat, size, level)))
        paths.append(str(path))
    code, out, err = run(capsys, "report", *paths, "-o", str(tmp_path / "cmp.html"))
    assert code == 0, err
    html = (tmp_path / "cmp.html").read_text()
    assert 'data-section="comparison"' in html and 'id="pareto"' in html
    assert all(f'id="m{i}-scorecard"' in html for i in range(3)) and "Robustness comparison: 3 runs" in html
    assert "no example-image grid" in out
    code, out, err = run(capsys, "report", str(tmp_path / "missing.json"))
    assert code == 2 and "does not exist" in err


@pytest.fixture(scope="module")
def live(digits_checkpoint, tmp_path_factory):
    """One CLI run with --html: the example grid comes from the model and lands in the JSON."""
    out = tmp_path_factory.mktemp("live")
    code = cli.main(["--checkpoint", str(digits_checkpoint), "--suite", "clean,corruptions", "--corruptions",
                     "gaussian_noise,fog,contrast", "--severities", "2,4", "--limit", "24", "--examples", "5",
                     "--html", str(out / "r.html"), "--json", str(out / "r.json"), "--no-progress", "--no-history"])
    assert code == 0
    return out


def test_live_run_example_grid(live, digits_checkpoint, digits_test):
    from PIL import Image

    from robustbench_lite.sources import checkpoints

    data = json.loads((live / "r.json").read_text())
    ex = data["examples"]
    assert [i["index"] for i in ex["images"]] == [0, 1, 2, 3, 4]
    kinds = [r["kind"] for r in ex["rows"]]
    assert kinds[0] == "clean" and kinds.count("corruption") == 3 and kinds[-1] == "adversarial"
    corr = [r for r in ex["rows"] if r["kind"] == "corruption"]
    acc = data["corruptions"]["accuracy"]
    worst_first = sorted(acc, key=lambda c: sum(acc[c].values()))
    assert [r["name"] for r in corr] == worst_first and all(r["severity"] == 4 and not r["illustrative"] for r in corr)
    assert ex["rows"][-1]["illustrative"]  # no adversarial suite ran: PGD shown for illustration only
    for row in ex["rows"]:
        assert len(row["cells"]) == 5
        for cell in row["cells"]:
            img = Image.open(io.BytesIO(base64.b64decode(cell["png"])))
            assert img.size == (8, 8) and 0 <= cell["confidence"] <= 1
    assert ex["rows"][0]["cells"][0]["correct"] == (ex["rows"][0]["cells"][0]["pred"] == ex["images"][0]["label"])
    # the clean row shows the checkpoint's own prediction and softmax confidence for each image
    net, _ = checkpoints.load_checkpoint(digits_checkpoint)
    with torch.inference_mode():
        conf, pred = net(digits_test.float_images(slice(0, 5))).softmax(1).max(1)
    clean = ex["rows"][0]["cells"]
    assert [c["pred"] for c in clean] == pred.tolist() and [i["label"] for i in ex["images"]] == \
        digits_test.labels[:5].tolist()
    assert [c["confidence"] for c in clean] == pytest.approx(conf.tolist(), abs=5e-5)  # stored to 4 places
    assert [c["correct"] for c in clean] == (pred == digits_test.labels[:5]).tolist()
    html = (live / "r.html").read_text()
    # 25 images, each with its two Grad-CAM heatmaps (predicted class, true class)
    assert 'data-section="examples"' in html and html.count("data:image/png;base64,") == 25 * 3
    assert all(cell["cam_pred"] and cell["cam_true"] for row in ex["rows"] for cell in row["cells"])
    check_self_contained(html)
    assert data["command"][0] == "robust-eval" and "--html" in data["command"]


def test_report_rebuilt_from_json_alone(live, tmp_path, capsys):
    code, out, err = run(capsys, "report", str(live / "r.json"), "-o", str(tmp_path / "again.html"))
    assert code == 0, err
    assert "no example-image grid" not in out
    again = (tmp_path / "again.html").read_text()
    first = (live / "r.html").read_text()
    strip = re.compile(r"generated \d{4}-\d\d-\d\d \d\d:\d\d")
    assert strip.sub("", again) == strip.sub("", first)  # JSON alone rebuilds the same page


# ---------------------------------------------------------------------------------------------
# A real browser

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--enable-logging=stderr", "--v=0"]


def chromium_binary() -> str | None:
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def chromium(binary: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path)
    return subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=180)


@pytest.mark.slow
@pytest.mark.browser
def test_report_in_headless_chromium(live, tmp_path):
    from PIL import Image

    binary = chromium_binary()
    if binary is None:
        pytest.skip("headless Chromium not found: install Debian 'chromium' ('make test' does where apt is usable) "
                    "or set CHROMIUM=/path/to/chrome")
    data = synthetic()
    data["examples"] = json.loads((live / "r.json").read_text())["examples"]
    page = write_html(tmp_path / "report.html", [data])
    html = page.read_text()
    n_images = html.count("<img ")

    dom = chromium(binary, tmp_path, "--virtual-time-budget=10000", "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, f"the page wrote to the browser console: {console}"
    # The page's own script records script errors, console.error calls and images that did not decode.
    assert 'data-report-status="ok"' in dom.stdout, re.findall(r'id="report-errors"[^>]*>([^<]*)', dom.stdout)
    assert f'data-report-images="{n_images}"' in dom.stdout and n_images >= 30
    for section in (*SECTIONS, "examples"):
        assert f'data-section="{section}"' in dom.stdout, section

    shot = tmp_path / "report.png"
    res = chromium(binary, tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", "--hide-scrollbars",
                   page.as_uri())
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    img = Image.open(shot)
    assert img.size == (1280, 2000)
    assert len(img.convert("L").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 50  # not a blank page
