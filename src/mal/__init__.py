"""MAL: mask auto-labeling from box annotations with a box-supervised Vision Transformer."""

__version__ = "0.1.0"
