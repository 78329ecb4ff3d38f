"""Instrumentation: where to read or write inside a model (``Site``) and how (``Edit``s, capture, gradients).

Everything here is analysis-agnostic. One ``Backend`` interface, three implementations that agree
numerically: plain torch hooks (default, fastest), TransformerLens' TransformerBridge, and nnsight.
``probes.forward`` shapes passes of a torch model beyond one trace (edits kept on while generating, a pass
stopped at a site or started at a block); analyses hook models through it, never by hand.
"""

from probes.backends import BACKENDS_AVAILABLE, Backend, Trace
from probes.backends.select import get_backend
from probes.edits import Edit, clamp, interchange, interchange_subspace, patch, steer
from probes.forward import editing, recording, run_to, starting_at
from probes.grad import activation_gradient, input_gradient
from probes.site import COMPONENTS, Site

__all__ = [
    "BACKENDS_AVAILABLE",
    "COMPONENTS",
    "Backend",
    "Edit",
    "Site",
    "Trace",
    "activation_gradient",
    "clamp",
    "editing",
    "get_backend",
    "input_gradient",
    "interchange",
    "interchange_subspace",
    "patch",
    "recording",
    "run_to",
    "starting_at",
    "steer",
]
