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
