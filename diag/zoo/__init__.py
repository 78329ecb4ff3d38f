"""Named model sources: the embedded SmolLM2, any Hugging Face id or local directory, our own models.

``load_lm`` is imported on first use, so that reading a model's facts (``diag.zoo.sources``) needs no torch.
"""

from typing import Any

from diag.zoo.sources import KNOWN_LMS, resolve_lm_source

__all__ = ["KNOWN_LMS", "load_lm", "resolve_lm_source"]


def __getattr__(name: str) -> Any:
    if name == "load_lm":
        from diag.zoo.lm import load_lm

        return load_lm
    raise AttributeError(f"module 'diag.zoo' has no attribute {name!r}")
