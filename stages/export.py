"""The export stage: export the model to ONNX, check it against PyTorch with onnxruntime, register it in MLflow."""

from __future__ import annotations

import onnxruntime as ort
import torch

from segpipe import tracking
from segpipe.data.canonical import read_manifest
from segpipe.data.dataset import DecodingSegmentation
from segpipe.errors import SegpipeError
from segpipe.fsutil import write_json
from segpipe.inference_cost import cost_metrics
from segpipe.onnx_export import contract, export_checked
from segpipe.params import Params
from segpipe.paths import EXPORT_REPORT, MODEL, ONNX_CONTRACT, ONNX_MODEL, SPLIT
from segpipe.stage import stage_main
from segpipe.trained_model import TrainedModel


def _log_to_mlflow(params: Params, trained: TrainedModel, example: torch.Tensor, report: dict) -> None:
    import onnx

    run_id = tracking.load_run_id()
    if not run_id:
        return
    tracking.log_metrics(params, run_id, {**{f"export_{k}": v for k, v in report.items() if isinstance(v, float)},
                                          **cost_metrics(report["cost"])})
    tracking.log_artifacts(params, run_id, [ONNX_CONTRACT, EXPORT_REPORT], "export")
    outputs = trained.task.onnx_outputs(trained.model, example)
    names = trained.task.onnx_names(trained.saved["config"])
    arrays = {"input": example.numpy(), **{name: out.numpy() for name, out in zip(names, outputs, strict=True)}}
    requirements = {"onnx_requirements": [f"onnxruntime=={ort.__version__}", f"onnx=={onnx.__version__}"],
                    "torch_requirements": [f"torch=={torch.__version__.split('+')[0]}"]}
    tracking.log_models(params, run_id, ONNX_MODEL, MODEL, arrays, requirements)
    tracking.finish(params, run_id)


def run(params: Params) -> dict:
    """Write export/model.onnx, export/model.json and reports/export.json; fail below the parity threshold."""
    device = torch.device("cpu")
    trained = TrainedModel.load(MODEL, device)
    to_input = trained.input_transform()
    test = DecodingSegmentation(read_manifest(SPLIT / "test.parquet"), instances=trained.task.with_instances)
    samples = [test[i] for i in range(min(params.export.parity_images, len(test)))]
    if not samples:
        raise SegpipeError("the test split is empty: export needs test images for its parity check")
    inputs = [to_input(sample["image"].unsqueeze(0)) for sample in samples]
    check = export_checked(trained, samples, inputs, ONNX_MODEL, params)
    if check.failure:
        ONNX_MODEL.unlink(missing_ok=True)
        raise SegpipeError(check.failure)
    report, example = check.report, inputs[0]
    spec = contract(trained, ONNX_MODEL, trained.task.output_contract(trained.saved["config"]))
    write_json(ONNX_CONTRACT, {**spec, "lineage": tracking.model_lineage()})
    write_json(EXPORT_REPORT, report)
    _log_to_mlflow(params, trained, example, report)
    cost = report["cost"]
    print(f"export: {ONNX_MODEL} {check.summary}; {cost['parameters']:,} parameters, {cost['gflops_at_size']:.3g} "
          f"GFLOPs; onnxruntime {report['onnxruntime_cpu_ms']:.1f} ms vs torch {report['torch_cpu_ms']:.1f} ms per "
          f"{tuple(report['latency_input_shape'])} (p50; the cost report is in {EXPORT_REPORT})")
    return report


def main() -> None:
    stage_main("export", run)


if __name__ == "__main__":
    main()
