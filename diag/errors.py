"""One exception type for bad input, so every front end can show one clear line instead of a traceback."""


class DiagError(Exception):
    """Bad input or an unusable resource (model name, checkpoint, config, data line).

    The CLI turns it into a one-line message and exit code 2.
    """
