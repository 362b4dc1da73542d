"""Sample data for napari-m2mrf, generated into a per-user cache on first use (no network needed).

* ``skimage_samples``: the real normal fundus photograph and the IHC tile shipped with scikit-image.
* ``fundus_samples``: semi-synthetic fundus images with rendered lesions and exact per-class masks.
* ``slide_sample``: a synthetic 32k² pyramidal histology slide (OME-Zarr and OME-TIFF) with ground truth.
* ``checkpoints/``: the small bundled default models.

Importing this package imports neither Qt, napari nor torch.
"""
