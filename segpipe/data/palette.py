"""Display colours for classes that the source gives none: PASCAL VOC's colour map (bits of the index spread
over R, G and B), so VOC data keeps its usual colours and any class count gets distinct ones."""

from __future__ import annotations


def class_color(index: int) -> tuple[int, int, int]:
    """The VOC colour-map entry of ``index`` (0 black, 1 dark red, 2 dark green, ...)."""
    red = green = blue = 0
    value = index
    for shift in range(7, -1, -1):
        red |= ((value >> 0) & 1) << shift
        green |= ((value >> 1) & 1) << shift
        blue |= ((value >> 2) & 1) << shift
        value >>= 3
    return red, green, blue
