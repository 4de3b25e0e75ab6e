"""segpipe: a reproducible image-segmentation pipeline (semantic, instance, panoptic)."""

__version__ = "0.1.0"
