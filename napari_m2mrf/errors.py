"""Errors that describe a user's mistake (bad input, missing file): shown as one line, never a traceback."""


class UserError(Exception):
    """A problem the user can fix; the CLI prints ``napari-m2mrf: error: <message>`` and exits with code 2."""


class InputRefused(UserError):
    """An input the read-side gate refuses before decoding (not a regular file, too large, wrong type)."""


class LimitExceeded(InputRefused):
    """An input declares more than a documented limit allows; the message says how to raise the limit."""


class CorruptData(UserError):
    """Stored pixel data (a TIFF tile, a zarr chunk) that fail to decode; the message names where."""
