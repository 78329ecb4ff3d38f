"""Named model sources: the embedded SmolLM2, any Hugging Face id or local directory, our own models."""

from diag.zoo.lm import KNOWN_LMS, load_lm, resolve_lm_source

__all__ = ["KNOWN_LMS", "load_lm", "resolve_lm_source"]
