"""Tooling beside the data path: reproducible sample images and the node benchmark."""
