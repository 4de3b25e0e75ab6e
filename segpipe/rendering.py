"""What ``predict`` needs from a task: how it renders one image's model outputs into files people and tools read."""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from segpipe.data.canonical import Categories


@dataclass
class Rendered:
    """What ``predict`` writes for one image: a label or instance-id map, an overlay, and COCO results (objects)."""

    label_map: np.ndarray  # HxW uint8 class ids, or uint16 instance ids
    overlay: np.ndarray  # HxWx3 uint8
    results: list[dict[str, Any]] | None = None  # COCO results entries (without image ids), None when not objects


def encode_png(array: np.ndarray) -> bytes:
    """The PNG bytes of a map or picture, as ``predict`` writes them and ``serve`` sends them."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


class Renderer(ABC):
    """A task as ``predict`` sees it."""

    map_name: str  # what predict writes per image, e.g. "label maps"

    @abstractmethod
    def render(self, outputs: list[torch.Tensor], pixels: np.ndarray, categories: Categories,
               output: dict[str, Any]) -> Rendered:
        """``predict``'s files for one image from the ONNX-ordered ``outputs`` (``output``: the contract)."""

    def prediction_file(self, entries: list[dict[str, Any]], categories: Categories) -> Any:
        """What ``predict`` writes as predictions.json from the ``results`` of its images (each with ``file_name``,
        the input's name, and ``prediction``, the file predict wrote for it)."""
        return entries

    def response(self, rendered: Rendered, categories: Categories) -> Any:
        """What ``segpipe serve`` answers as JSON for one image: by default its COCO results entries."""
        return rendered.results
