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
