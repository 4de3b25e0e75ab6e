"""Where each stage reads and writes, relative to the project root (dvc.yaml lists the same paths)."""

from pathlib import Path

SOURCE = Path("data/source")  # a link to ingest.source, for DVC to hash (segpipe.data.source_link)
EXTRA_SOURCE = Path("data/source-extra")  # ... and one to pretrain.extra_images
RAW = Path("data/raw")
CLEAN = Path("data/clean")
SPLIT = Path("data/split")
CACHE = Path("data/cache")
REPORTS = Path("reports")
MODELS = Path("models")
EXPORT = Path("export")
PARAMS_CHECK = REPORTS / "params_check.json"
AUGMENT_POLICY = CACHE / "augment_policy.json"  # the augment stage's transforms, as training applies them
PRETRAINED = MODELS / "pretrained.pt"  # the pretrain stage's encoder (model.weights: pretrained)
PRETRAIN_SUMMARY = REPORTS / "pretrain.json"  # a DVC metrics file: what the pretraining reached
MODEL = MODELS / "model.pt"  # the train stage's model: weights, model config, classes, normalisation
TRAIN_SUMMARY = REPORTS / "train.json"  # a DVC metrics file: the validation metrics of the epoch kept
MLFLOW_RUN = MODELS / "mlflow_run.json"  # the run that train opened and export closes
METRICS = REPORTS / "metrics.json"  # the evaluate stage's test metrics
ONNX_MODEL = EXPORT / "model.onnx"
ONNX_CONTRACT = EXPORT / "model.json"  # what the ONNX model takes and gives, for predict and other tools
EXPORT_REPORT = REPORTS / "export.json"  # parity with PyTorch and latency
