"""Plots of results with plotnine (static) and plotly (interactive).

The renderers arrive with the plotting issue ("Plotting: plotnine and plotly
views of every result"); until then these entry points say so.
"""

from __future__ import annotations

from typing import Any

_PENDING = (
    "Plots are not implemented yet: they arrive with the plotting module "
    "(issue 'Plotting: plotnine and plotly views of every result'). Use "
    "result.get_result('data.frame') to plot the values yourself meanwhile."
)


def plot(result: Any, **kwargs: Any) -> Any:
    """One sample's explanation per selected output node."""
    raise NotImplementedError(_PENDING)


def plot_global(result: Any, **kwargs: Any) -> Any:
    """Explanations summarised over samples."""
    raise NotImplementedError(_PENDING)
