"""``python -m napari_m2mrf`` is the ``napari-m2mrf`` command."""

from napari_m2mrf.cli import main

raise SystemExit(main())
