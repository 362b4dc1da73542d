"""Sampling shared by training and inference (numpy/scipy only): reading samples from an image pyramid, and the reverse fill that maps samples back to pixels."""
