"""One exception type for bad input, so every front end can show one clear line instead of a traceback."""


def first_line(exc: BaseException) -> str:
    """An exception's first message line for a one-line error (its type's name when the message is empty):
    libraries' messages run to many lines of advice."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class DiagError(Exception):
    """Bad input or an unusable resource (model name, checkpoint, config, data line).

    The CLI turns it into a one-line message and exit code 2.
    """
