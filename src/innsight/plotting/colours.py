"""Colours and opacities both renderers (plotnine and plotly) draw with."""

from typing import Any

#: Diverging colours: negative blue, zero white, positive red (ColorBrewer RdBu).
NEGATIVE, MIDDLE, POSITIVE = "#2166ac", "#f7f7f7", "#b2182b"
#: One sample highlighted over box plots (``plot_global(ref_data_idx=...)``).
HIGHLIGHT = "#ff7f00"
#: Zero on a line coloured by its values: grey, so that the line stays visible on white.
LINE_MIDDLE = "#b0b0b0"
#: Values over an input image: the full colour of their sign (brighter than the
#: diverging ends, so that they show on dark parts of the image too).
OVERLAY_NEGATIVE, OVERLAY_POSITIVE = "#1f78d1", "#e31a1c"
#: Opacity of the largest value drawn over an input image; smaller values are more
#: transparent (zero shows the image alone).
OVERLAY_ALPHA = 0.85
#: Opacity grows as ``(|value| / largest) ** OVERLAY_GAMMA``: below 1, values a fifth
#: of the largest still show (at about 0.45 of full opacity, not 0.2).
OVERLAY_GAMMA = 0.5
#: Darkest grey of an input image under values (0 black, 1 white): a lighter, softer
#: image keeps dark strokes or backgrounds from hiding the colours over them.
INPUT_DARKEST = 0.45


def overlay_opacity(fraction: Any) -> Any:
    """Opacity of values over an input image; ``fraction`` (a float or an array) is
    ``|value| / largest`` in [0, 1]."""
    return OVERLAY_ALPHA * fraction**OVERLAY_GAMMA
