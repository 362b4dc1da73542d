"""Errors that describe a user's mistake (bad input, missing file): shown as one line, never a traceback."""


class UserError(Exception):
    """A problem the user can fix; the CLI prints ``napari-m2mrf: error: <message>`` and exits with code 2."""
