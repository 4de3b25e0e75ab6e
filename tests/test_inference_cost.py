"""The inference cost report: FLOPs against a hand count, parameters, and figures for each runtime here."""

import torch
from torch import nn

from segpipe.inference_cost import cost_metrics, cost_report, count_flops, parameter_count
from segpipe.onnx_export import INPUT, SPATIAL_AXES, export_onnx


def tiny_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.ReLU(), nn.Conv2d(4, 2, 1))


def hand_count(height: int, width: int) -> int:
    """A multiply-add is 2 FLOPs: conv 3x3 3->4 without bias, then conv 1x1 4->2 (its bias is not counted)."""
    return 2 * height * width * (4 * 3 * 3 * 3 + 2 * 4)


def test_flops_equal_a_hand_count():
    net = tiny_net()
    assert count_flops(net, torch.zeros(1, 3, 8, 8)) == hand_count(8, 8) == 14848
    assert count_flops(net, torch.zeros(2, 3, 16, 12)) == 2 * hand_count(16, 12)
    assert count_flops(nn.Linear(10, 5), torch.zeros(1, 10)) == 2 * 10 * 5
    assert parameter_count(net) == 4 * 3 * 3 * 3 + 2 * 4 + 2


def test_cost_report_times_every_runtime_at_the_asked_size(tmp_path):
    net = tiny_net().eval()
    onnx = tmp_path / "model.onnx"
    example = torch.randn(1, 3, 20, 24)
    export_onnx(net, onnx, example, 18, ("logits",), {INPUT: SPATIAL_AXES, "logits": SPATIAL_AXES})
    report = cost_report(net, onnx, example, train_size=[16, 16], size=[32, 40], runs=6, batch_size=4, batches=True)
    assert report["gflops_at_train_size"] == hand_count(16, 16) / 1e9
    assert report["gflops_at_size"] == hand_count(32, 40) / 1e9 and report["size"] == [32, 40]
    assert report["parameters"] == parameter_count(net) and report["batch_size"] == 4
    assert set(report["runtimes"]) >= {"eager_cpu", "onnxruntime_cpu"}
    for figures in report["runtimes"].values():
        assert 0 < figures["p50_ms"] <= figures["p95_ms"] and figures["images_per_s"] > 0
        assert figures["peak_rss_mb"] > 50  # the resident set of a process that imported torch
    metrics = cost_metrics(report)
    assert metrics["export_cost_parameters"] == report["parameters"]
    assert metrics["export_cost_onnxruntime_cpu_p95_ms"] == report["runtimes"]["onnxruntime_cpu"]["p95_ms"]
    one_by_one = cost_report(net, onnx, example, None, None, runs=3, batch_size=8, batches=False)
    assert one_by_one["batch_size"] == 1 and one_by_one["train_size"] == one_by_one["size"] == [20, 24]
