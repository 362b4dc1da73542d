"""Images and slides in and out: readers, the workspace store, writers, conversion.

Nothing here imports Qt or napari. Images in memory are channel-last ``(Y, X, C)`` uint8;
on disk images are stored in OME-NGFF order ``(C, Y, X)`` and labels as ``(Y, X)`` uint8.
"""
