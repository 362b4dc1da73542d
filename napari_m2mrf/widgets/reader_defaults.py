"""Which reader napari picks by default for the files this plugin reads (napari's reader preferences).

napari asks which reader to use whenever two plugins claim a file and the user has no preference
(*Preferences ▸ Plugins ▸ File extension readers*). Every file this plugin reads must be claimed in
``napari.yaml``, or neither *File ▸ Open with Plugin* nor ``viewer.open(path, plugin="napari-m2mrf")``
could reach it (npe2 filters even an explicit plugin choice by the manifest's patterns). So the
defaults live here: workspaces, slides, OME-TIFF and photographs in a dataset layout (IDRiD, DDR
names) come to this plugin; any other photograph stays with napari's own reader, as it was before
the plugin was installed. Patterns starting with "/" rank above napari's "*.ext" ones (napari
sorts preferences by specificity, absolute patterns first); folders are matched with a trailing "/".
"""

from __future__ import annotations

PLUGIN_NAME = "napari-m2mrf"
READER_DEFAULTS: dict[str, str] = {
    "/*.m2mrf.zarr/": PLUGIN_NAME,
    "/*.ome.zarr/": PLUGIN_NAME,
    "/*.ome.tif": PLUGIN_NAME,
    "/*.ome.tiff": PLUGIN_NAME,
    **{f"*{ext}": PLUGIN_NAME for ext in (".svs", ".svslide", ".ndpi", ".vms", ".vmu", ".mrxs", ".scn", ".bif", ".czi")},
    **{f"*{ext}": PLUGIN_NAME for ext in (".dcm", ".dicom")},
    "*.btf": PLUGIN_NAME,
    "*.tf8": PLUGIN_NAME,
    "/*/IDRiD_*.jpg": PLUGIN_NAME,
    "/*/IDRiD_*.tif": PLUGIN_NAME,
    "/*/[0-9][0-9][0-9]-[0-9][0-9][0-9][0-9]-[0-9][0-9][0-9].jpg": PLUGIN_NAME,  # DDR image names
    **{f"*{ext}": "napari" for ext in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")},
}


def remember_reader_defaults() -> dict[str, str]:
    """Add :data:`READER_DEFAULTS` to napari's reader preferences where the user has set nothing for
    the pattern (a choice of the user is never changed); returns what was added.

    Called whenever the plugin is first used in a session (a widget opens, a file is read), so from
    then on dropping a workspace opens it here and dropping a plain photograph opens it in napari's
    reader, with no "which plugin?" dialog; the user changes either in Preferences.
    """
    try:
        from napari.settings import get_settings
    except ImportError:
        return {}
    plugins = get_settings().plugins
    current = dict(plugins.extension2reader)
    added = {pattern: reader for pattern, reader in READER_DEFAULTS.items() if pattern not in current}
    if added:
        plugins.extension2reader = {**current, **added}
    return added
