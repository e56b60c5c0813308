import pytest
import torch
from torch import nn

from robustbench_lite import efficiency, models


def test_flops_of_a_linear_layer_are_exact():
    m = nn.Sequential(nn.Flatten(), nn.Linear(64, 10, bias=False))
    assert efficiency.count_flops(m, torch.rand(1, 1, 8, 8)) == 2 * 64 * 10


def test_flops_of_a_convolution_are_exact():
    m = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    # 2 * Cout * H * W * Cin * k * k
    assert efficiency.count_flops(m, torch.rand(1, 3, 16, 16)) == 2 * 8 * 16 * 16 * 3 * 9


def test_params_and_size():
    m = nn.Linear(100, 10)
    total, trainable = efficiency.count_params(m)
    assert total == trainable == 1010
    assert efficiency.weights_size_mb(m) == pytest.approx(1010 * 4 / 1e6, abs=0.002)


def test_measure_a_real_model():
    m = models.build("shufflenetv2_x0_5", 10, 1, 28)
    r = efficiency.measure(m, (1, 28, 28), torch.device("cpu"), throughput_batch_size=32, warmup=1, runs=3)
    assert r.params == sum(p.numel() for p in m.parameters())
    assert r.flops > 0 and r.macs * 2 == r.flops
    assert r.latency_ms > 0 and r.throughput > 0 and r.latency_ms_p90 >= r.latency_ms
    # activations of a 32-image batch need memory, but far less than 1 GB
    assert 0.05 < r.peak_memory_mb < 1000 and r.memory_method == "profiler_cpu_allocations"
    assert m.training  # mode restored


def test_peak_memory_grows_with_batch():
    m = models.build("shufflenetv2_x0_5", 10, 1, 28).eval()
    small, _ = efficiency.peak_memory_mb(m, torch.rand(4, 1, 28, 28))
    large, _ = efficiency.peak_memory_mb(m, torch.rand(64, 1, 28, 28))
    assert large > 4 * small


def test_timings_carry_their_spread_and_the_load_they_were_taken_under():
    m = models.build("shufflenetv2_x0_5", 10, 1, 28)
    r = efficiency.measure(m, (1, 28, 28), torch.device("cpu"), throughput_batch_size=16, warmup=1, runs=8)
    assert r.latency_ms_iqr >= 0
    low, high = r.throughput_range
    assert low <= r.throughput <= high
    assert set(r.load) == {"before", "after", "cpus", "threads", "busy"}
    assert r.load["threads"] == torch.get_num_threads()


@pytest.mark.parametrize(("before", "cpus", "threads", "busy"),
                         [(0.3, 2, 2, False), (0.6, 2, 2, True), (1.4, 2, 1, False), (1.6, 2, 1, True),
                          (5.0, 16, 8, False), (9.0, 16, 8, True)])
def test_busy_means_other_work_on_the_cores_the_timings_use(before, cpus, threads, busy):
    assert efficiency.is_busy({"before": before, "cpus": cpus, "threads": threads}) is busy


def test_a_busy_machine_is_said_in_the_log_the_json_and_the_report(monkeypatch):
    import os

    from robustbench_lite import data
    from robustbench_lite.api import evaluate
    from robustbench_lite.suites.efficiency import EfficiencySuite

    monkeypatch.setattr(os, "getloadavg", lambda: (float(os.cpu_count() or 1) + 3, 0.0, 0.0))
    lines = []
    result = evaluate(models.build("shufflenetv2_x0_5", 10, 1, 8), data.load("digits", "test"), "efficiency",
                      log=lines.append, latency_runs=3, throughput_batch_size=8)
    assert result.suites["efficiency"].load["busy"] is True
    assert [line for line in lines if line.startswith("efficiency: warning: the machine was busy while timing")]
    rows = {r["label"]: r["value"] for r in EfficiencySuite.report_section(result.to_dict()["efficiency"], {})["rows"]}
    assert rows["machine load while timing"].startswith("the machine was busy")


def test_energy_comes_from_a_counter_or_is_said_not_measurable(tmp_path, monkeypatch):
    none = efficiency.EnergyCounter(torch.device("cpu"))
    monkeypatch.setattr(efficiency.EnergyCounter, "POWERCAP", str(tmp_path))
    missing = efficiency.EnergyCounter(torch.device("cpu"))
    assert missing.read() is None and missing.source.startswith("not measurable here")
    # a package zone as Linux exposes it (sub-zones are inside it and not counted twice)
    for zone, value in (("intel-rapl:0", "1000000"), ("intel-rapl:0:0", "5")):
        (tmp_path / zone).mkdir()
        (tmp_path / zone / "energy_uj").write_text(value)
        (tmp_path / zone / "max_energy_range_uj").write_text("262143328850")
    counter = efficiency.EnergyCounter(torch.device("cpu"))
    assert counter.source == "powercap/RAPL (1 package)" and counter.read() == [1000000]
    assert counter.joules([1000000], [3500000]) == pytest.approx(2.5)
    assert counter.joules([262143328850 - 1000000], [500000]) == pytest.approx(1.5)  # wrapped around once
    m = models.build("shufflenetv2_x0_5", 10, 1, 28)
    r = efficiency.measure(m, (1, 28, 28), torch.device("cpu"), throughput_batch_size=8, warmup=1, runs=3)
    assert r.energy_j_per_image == 0.0 and r.energy_source == "powercap/RAPL (1 package)"  # a counter that did not move
    if none.read() is None:  # this machine: no counter, so no number
        monkeypatch.setattr(efficiency.EnergyCounter, "POWERCAP", str(tmp_path / "absent"))
        r = efficiency.measure(m, (1, 28, 28), torch.device("cpu"), throughput_batch_size=8, warmup=1, runs=3)
        assert r.energy_j_per_image is None and r.energy_source.startswith("not measurable here")
