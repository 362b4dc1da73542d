"""napari-m2mrf."""
