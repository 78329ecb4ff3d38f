"""Instrumentation: where to read or write inside a model (``Site``) and how (``Edit``s, capture, gradients).

Everything here is analysis-agnostic. One ``Backend`` interface, three implementations that agree
numerically: plain torch hooks (default, fastest), TransformerLens' TransformerBridge, and nnsight.
"""

from probes.backends import BACKENDS_AVAILABLE, Backend, Trace
from probes.backends.select import get_backend
from probes.edits import Edit, clamp, interchange, interchange_subspace, patch, steer
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
    "get_backend",
    "input_gradient",
    "interchange",
    "interchange_subspace",
    "patch",
    "steer",
]
