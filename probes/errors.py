"""Errors probes raise for bad requests; front ends turn them into one-line messages."""


class ProbeError(ValueError):
    """A request the model or the environment cannot satisfy (the caller's input is wrong, not the code)."""


class SiteError(ProbeError):
    """A site that does not exist in the model it is applied to."""


class RemoteUnavailable(ProbeError):
    """Remote execution was asked for but cannot run (no API key, no network)."""
