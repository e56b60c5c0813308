"""Grad-CAM: the maps a hand computation gives, the layer a model's size calls for, heatmaps in the report."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from robustbench_lite import cli
from robustbench_lite.analysis.gradcam import choose_layer, grad_cam
from robustbench_lite.sources import architectures


class _Tiny(nn.Module):
    """features: a 1x1 convolution with 2 output maps; head: average pool then a linear layer."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False))
        self.head = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.features[0].weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            self.head.weight.copy_(torch.tensor([[2.0, 1.0], [-1.0, 3.0]]))

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


def test_grad_cam_equals_the_hand_computation():
    net = _Tiny()
    image = torch.tensor([[[[0.2, 0.8], [0.5, 0.0]]]])
    # A_1 = x, A_2 = -x; d y_c / d A_k = W[c, k] / 4 at every position, so alpha_k = W[c, k] / 4.
    # class 0: 2/4 x - 1/4 x = x / 4 -> relu -> scaled by its maximum: x / 0.8
    cam0 = grad_cam(net, image, torch.tensor([0]), "features.0")
    assert torch.allclose(cam0[0], image[0, 0] / 0.8, atol=1e-6)
    # class 1: -1/4 x - 3/4 x = -x <= 0 everywhere: no evidence, an all-zero map
    cam1 = grad_cam(net, image, torch.tensor([1]), "features.0")
    assert torch.equal(cam1[0], torch.zeros(2, 2))
    assert all(p.requires_grad for p in net.parameters()) and net.training  # the model is left as it was


def test_the_layer_is_the_deepest_block_with_maps_at_least_4_pixels_wide():
    torch.manual_seed(0)
    small = architectures.build("shufflenetv2", 10, 1, 28)
    assert choose_layer(small, torch.rand(1, 1, 28, 28)) == "net.stage3.7"  # conv5's maps are 2x2 at 28 px
    large = architectures.build("shufflenetv2", 10, 3, 224)
    assert choose_layer(large, torch.rand(1, 3, 224, 224)) == "net.conv5.2"  # the standard: the last conv, 7x7
    resnet = architectures.build("resnet18", 10, 1, 28)
    assert choose_layer(resnet, torch.rand(1, 1, 28, 28)) == "net.layer4.1"  # a residual block is one block
    maps = grad_cam(resnet, torch.rand(3, 1, 28, 28), torch.tensor([0, 1, 2]), "net.layer4.1")
    assert maps.shape == (3, 28, 28) and float(maps.min()) >= 0 and float(maps.max()) <= 1


def test_the_report_grid_carries_heatmaps_and_a_bad_layer_is_refused_first(digits_checkpoint, tmp_path, capsys):
    out = tmp_path / "r.json"
    argv = ["--checkpoint", str(digits_checkpoint), "--suite", "clean", "--limit", "40", "--html",
            str(tmp_path / "r.html"), "--json", str(out), "--examples", "4", "--no-history", "--no-progress"]
    assert cli.main(argv) == 0
    examples = json.loads(out.read_text())["examples"]
    # 8 px digits: the stages after the stem's max pool (4x4) have 2x2 maps and less
    assert examples["cam"] == {"method": "grad-cam", "layer": "net.maxpool", "chosen": True}
    cells = [c for row in examples["rows"] for c in row["cells"]]
    assert cells and all(c["cam_pred"] and c["cam_true"] for c in cells)
    html = (tmp_path / "r.html").read_text()
    assert "Grad-CAM heatmaps" in html and html.count('alt="Grad-CAM of the predicted class') == len(cells)
    out.unlink()
    capsys.readouterr()
    assert cli.main([*argv, "--cam-layer", "net.stage9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--cam-layer 'net.stage9' is not a layer of this model" in err[0], err
    assert not out.exists()


@pytest.mark.parametrize("layer", ["net.stage2", "net.conv1.0"])
def test_a_named_layer_is_used(layer, digits_checkpoint, tmp_path):
    out = tmp_path / "r.json"
    assert cli.main(["--checkpoint", str(digits_checkpoint), "--suite", "clean", "--limit", "20", "--html",
                     str(tmp_path / "r.html"), "--json", str(out), "--examples", "2", "--no-history", "--no-progress",
                     "--cam-layer", layer]) == 0
    assert json.loads(out.read_text())["examples"]["cam"]["layer"] == layer
