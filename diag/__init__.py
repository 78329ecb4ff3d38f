"""diag: an interpretability and policy-diagnostics workbench.

Each analysis lives in a sub-package exposing ``Config``, ``run(config, progress=...) -> Result``.
"""

__version__ = "0.1.0"
