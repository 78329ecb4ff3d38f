"""Self-contained HTML reports of finished runs (``diag report``, ``diag audit``).

``diag.report.sections`` holds the pieces an analysis uses to describe itself (``Guide``, ``Metric``, ``Table``);
``diag.report.render`` turns runs into HTML. Nothing is imported here so the CLI starts fast.
"""
