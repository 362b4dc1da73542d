"""Qt/magicgui widgets of the plugin (the only part of the package that imports Qt and napari)."""
