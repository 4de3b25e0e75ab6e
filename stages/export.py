"""Stage 7: export the model to ONNX, check it against PyTorch with onnxruntime, register it in MLflow."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import torch

from segpipe import tracking
from segpipe.config import Params
from segpipe.data.canonical import read_manifest
from segpipe.data.dataset import DecodingSegmentation
from segpipe.errors import SegpipeError
from segpipe.evaluation import TrainedModel
from segpipe.fsutil import write_json
from segpipe.onnx_export import INPUT, contract, export_onnx, median_ms, parity
from segpipe.paths import EXPORT, MODELS, REPORTS, SPLIT
from segpipe.stage import stage_main

ONNX_FILE, CONTRACT_FILE, REPORT_FILE = EXPORT / "model.onnx", EXPORT / "model.json", REPORTS / "export.json"
STAGING = tracking.STATE_DIR / "export"


def _log_to_mlflow(params: Params, trained: TrainedModel, example: torch.Tensor, report: dict) -> None:
    import onnx

    run_id = tracking.load_run_id()
    if not run_id:
        return
    tracking.log_metrics(params, run_id, {f"export_{k}": v for k, v in report.items() if isinstance(v, float)})
    tracking.log_artifacts(params, run_id, [CONTRACT_FILE, REPORT_FILE], "export")
    # the models go through the tracking outbox as files, so an unreachable server only delays them
    STAGING.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        np.savez(STAGING / "example.npz", input=example.numpy(), output=trained.model(example).numpy())
    torch.save(trained.model, STAGING / "pytorch_model.pt")
    files = {"onnx": str(ONNX_FILE.resolve()), "pytorch": str((STAGING / "pytorch_model.pt").resolve()),
             "example": str((STAGING / "example.npz").resolve())}
    requirements = {"onnx_requirements": [f"onnxruntime=={ort.__version__}", f"onnx=={onnx.__version__}"],
                    "torch_requirements": [f"torch=={torch.__version__.split('+')[0]}"]}
    tracking.log_models(params, run_id, files, requirements)
    tracking.finish(params, run_id)


def run(params: Params) -> dict:
    """Write export/model.onnx, export/model.json and reports/export.json; fail below the parity threshold."""
    device = torch.device("cpu")
    trained = TrainedModel.load(MODELS / "model.pt", device)
    to_input = trained.input_transform()
    test = DecodingSegmentation(read_manifest(SPLIT / "test.parquet"))
    count = min(params.export.parity_images, len(test))
    inputs = [to_input(test[i]["image"].unsqueeze(0)) for i in range(count)]
    if not inputs:
        raise SegpipeError("the test split is empty: export needs test images for its parity check")
    export_onnx(trained.model, ONNX_FILE, inputs[0], params.export.opset)
    session = ort.InferenceSession(str(ONNX_FILE), providers=["CPUExecutionProvider"])
    result = parity(trained.model, lambda x: session.run(None, {INPUT: x})[0], inputs)
    report = {"parity_images": result.images, "max_abs_logit_diff": result.max_abs_logit_diff,
              "argmax_agreement": result.argmax_agreement, "min_agreement": params.export.min_agreement}
    if result.argmax_agreement < params.export.min_agreement:
        ONNX_FILE.unlink()
        raise SegpipeError(f"ONNX argmax agreement {result.argmax_agreement:.5f} is below export.min_agreement "
                           f"{params.export.min_agreement} (max logit diff {result.max_abs_logit_diff:.2e})")
    example = inputs[0]
    with torch.no_grad():
        report["torch_cpu_ms"] = median_ms(lambda: trained.model(example), params.export.latency_runs)
    report["onnxruntime_cpu_ms"] = median_ms(lambda: session.run(None, {INPUT: example.numpy()}),
                                             params.export.latency_runs)
    report["latency_input_shape"] = list(example.shape)
    report["onnxruntime_speedup"] = report["torch_cpu_ms"] / report["onnxruntime_cpu_ms"]
    write_json(CONTRACT_FILE, contract(trained, ONNX_FILE.name))
    write_json(REPORT_FILE, report)
    _log_to_mlflow(params, trained, example, report)
    print(f"export: {ONNX_FILE} argmax agreement {result.argmax_agreement:.5f}, max logit diff "
          f"{result.max_abs_logit_diff:.1e}; onnxruntime {report['onnxruntime_cpu_ms']:.1f} ms vs torch "
          f"{report['torch_cpu_ms']:.1f} ms per {tuple(example.shape)}")
    return report


def main() -> None:
    stage_main("export", run)


if __name__ == "__main__":
    main()
