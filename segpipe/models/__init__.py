"""Segmentation models behind one factory: ``create_model(name, num_classes, ...)`` returns NCHW logits."""

from segpipe.models.registry import MODEL_NAMES, create_model, load_weights

__all__ = ["MODEL_NAMES", "create_model", "load_weights"]
