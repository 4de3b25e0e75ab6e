"""Datasets: the canonical on-disk format, the source readers, cleaning, splitting and the training cache."""
