"""The ``segpipe`` command line: params presets, prediction, serving and denoising."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from segpipe import presets
from segpipe.errors import SegpipeError
from segpipe.stage import telemetry_off


def _preset(args: argparse.Namespace) -> None:
    if not args.name:
        names = presets.available()
        width = max(len(n) for n in names)
        print("\n".join(f"{name:<{width}}  {presets.description(name)}" for name in names))
        return
    path, kept = presets.apply(args.name, args.params)
    previous = f" (previous params in {kept})" if kept else ""
    experiment = " (one run), or python -m flows.sweep (the experiment in orchestration.sweep)" \
        if presets.has_sweep(args.name) else ""
    print(f"wrote preset {args.name} to {path}{previous}; now run: dvc repro{experiment}")


def _predict(args: argparse.Namespace) -> None:
    from segpipe.data.imageio import set_pixel_limit
    from segpipe.predict import Predictor, predict

    set_pixel_limit(args.max_pixels, "--max-pixels")
    predictor = Predictor.load(args.model)
    report = predict(predictor, args.inputs, Path(args.out))
    for _, reason in report.skipped:
        print(f"segpipe predict: skipped {reason}", file=sys.stderr)
    print(f"predict: wrote {len(report.written)} {predictor.task.map_name} and overlays to {args.out}, "
          f"skipped {len(report.skipped)}")
    if not report.written:
        raise SegpipeError("no input image could be read")


def _serve(args: argparse.Namespace) -> None:
    from segpipe.serving.server import serve

    serve(args.model, args.host, args.port, args.workers, max_bytes=args.max_bytes, max_pixels=args.max_pixels,
          queue=args.queue, params_path=Path(args.params))


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive whole number")
    return value


def _denoise(args: argparse.Namespace) -> None:
    from segpipe.denoise import denoise

    report = denoise(args.model, args.inputs, Path(args.out))
    for _, reason in report.skipped:
        print(f"segpipe denoise: skipped {reason}", file=sys.stderr)
    print(f"denoise: wrote {len(report.written)} reconstructions to {args.out}, skipped {len(report.skipped)}")
    if not report.written:
        raise SegpipeError("no input image could be read")


def _sync_tracking(args: argparse.Namespace) -> None:
    from segpipe import tracking
    from segpipe.params import load_params
    from segpipe.tracking.outbox import Outbox

    params = load_params(args.params)
    pending = tracking.pending_count()
    delivered = tracking.flush(params.tracking)
    left = tracking.pending_count()
    where = tracking.tracking_uri(params.tracking)
    if not pending:
        print(f"sync-tracking: nothing pending for {where}")
    elif left:
        raise SegpipeError(f"{where} still unreachable: delivered {delivered} queued calls, {left} wait in "
                           f"{Outbox().path}; run again once the server is up")
    else:
        print(f"sync-tracking: delivered {delivered} of {pending} queued calls to {where}"
              + (f"; {pending - delivered} refused, set aside in {Outbox().rejected}" if delivered < pending else ""))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segpipe", description="Reproducible image-segmentation pipeline.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    formatter = argparse.ArgumentDefaultsHelpFormatter

    def command(name: str, summary: str, details: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=summary, description=f"{summary[0].upper()}{summary[1:]}. {details}",
                              formatter_class=formatter)

    preset = command("preset", "write a shipped params preset to params.yaml",
                     "Without a name, list the presets with what each is for. The old file is kept as <params>.bak "
                     "(<params>.2.bak, ... when that is taken: no backup is ever overwritten).")
    preset.add_argument("name", nargs="?", help="preset to write (omit to list them)")
    preset.add_argument("--params", default="params.yaml", help="params file to write")
    preset.set_defaults(func=_preset)
    predict = command("predict", "segment images with a trained or exported model",
                      "Writes a label PNG and a colour overlay per image; unreadable files are skipped and named.")
    predict.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    predict.add_argument("--model", default="export/model.onnx",
                         help="an exported ONNX model or a checkpoint (models/model.pt)")
    predict.add_argument("--out", default="predictions", help="output folder")
    predict.add_argument("--max-pixels", type=int, default=None,
                         help="skip images with more pixels, from their header (default: sized for this machine)")
    predict.set_defaults(func=_predict)
    serve = command("serve", "answer HTTP requests with an exported model",
                    "POST an image (raw bytes or a multipart file) to /predict and get what predict writes for it "
                    "(?format=png|overlay|json); GET /health, /metadata (contract and lineage) and /metrics "
                    "(Prometheus). Listens on loopback unless --host says otherwise.")
    serve.add_argument("--model", default="export/model.onnx",
                       help="an exported ONNX model, or models:/<name>/<version> (or /latest, @<alias>) from the "
                            "MLflow registry")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on")
    serve.add_argument("--workers", type=_positive, default=1, help="worker processes, each with its own model")
    serve.add_argument("--max-bytes", type=_positive, default=20 * 1024 * 1024,
                       help="largest request body; larger ones get 413")
    serve.add_argument("--max-pixels", type=_positive, default=4096 * 4096,
                       help="largest image (width x height, from its header); larger ones get 413")
    serve.add_argument("--queue", type=_positive, default=32,
                       help="requests each worker admits at once (running or waiting); more get 503")
    serve.add_argument("--params", default="params.yaml",
                       help="params file whose tracking section names the registry (for models:/ URIs)")
    serve.set_defaults(func=_serve)
    denoise = command("denoise", "clean images with the pretrained autoencoder",
                      "Writes the autoencoder's reconstruction of each image as <stem>.png (pretrain.enabled: true).")
    denoise.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    denoise.add_argument("--model", default="models/pretrained.pt", help="the pretrain stage's output")
    denoise.add_argument("--out", default="denoised", help="output folder")
    denoise.set_defaults(func=_denoise)
    sync = command("sync-tracking", "send MLflow calls queued while the tracking server was down",
                   "Replays .segpipe/mlflow_outbox.jsonl in order to the tracking server of the params; a call "
                   "the server refuses for good is set aside in .segpipe/mlflow_outbox.rejected.jsonl.")
    sync.add_argument("--params", default="params.yaml", help="params file whose tracking section names the server")
    sync.set_defaults(func=_sync_tracking)
    return parser


def main(argv: list[str] | None = None) -> None:
    telemetry_off()
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except SegpipeError as exc:
        print(f"segpipe: error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
