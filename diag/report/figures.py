"""Axis habits every stored (matplotlib) figure shares, so the report never shows "layer 0.25" or "k 1.5"."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axis import Axis


def integer_ticks(*axes: Axis) -> None:
    """Ticks at whole numbers only, for axes that count things (agent steps, k, layers, token positions).

    A linear axis gets at most ~8 integer ticks (one, if the data are flat); a log axis (pass@k's k) ticks at
    powers of its base, never below 1 (call after ``set_xscale``/``set_yscale``).
    """
    from matplotlib.ticker import FormatStrFormatter, LogLocator, MaxNLocator, NullLocator

    for axis in axes:
        if axis.get_scale() == "log":
            base = getattr(axis.get_transform(), "base", 10)
            axis.set_major_locator(LogLocator(base=base, subs=(1.0,)))
            axis.set_minor_locator(NullLocator())
            axis.set_major_formatter(FormatStrFormatter("%d"))
            low, high = getattr(axis.axes, f"get_{axis.axis_name}lim")()
            getattr(axis.axes, f"set_{axis.axis_name}lim")(max(low, 1), max(high, base))
        else:
            # min_n_ticks=1: a flat count (one layer, a score that stays 1) still ticks at its whole number, where
            # the default two ticks would fall on fractions of the autoscale margin
            axis.set_major_locator(MaxNLocator(nbins=8, integer=True, min_n_ticks=1))
