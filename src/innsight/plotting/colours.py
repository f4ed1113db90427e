"""Colours and opacities both renderers (plotnine and plotly) draw with."""

#: Diverging colours: negative blue, zero white, positive red (ColorBrewer RdBu).
NEGATIVE, MIDDLE, POSITIVE = "#2166ac", "#f7f7f7", "#b2182b"
#: Zero on a line coloured by its values: grey, so that the line stays visible on white.
LINE_MIDDLE = "#b0b0b0"
#: Opacity of the largest value drawn over an input image; smaller values are more
#: transparent (zero shows the image alone).
OVERLAY_ALPHA = 0.8
