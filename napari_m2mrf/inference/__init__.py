"""Inference: device choice, tiled and deformed-downsample inference, progress and cancel (no Qt)."""
