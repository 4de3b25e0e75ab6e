"""Segmentation models behind one factory, :func:`build_model` (which models exist: :mod:`segpipe.catalog`)."""

from segpipe.models.build import build_model, load_weights

__all__ = ["build_model", "load_weights"]
