"""Values over a sequence of tokens as coloured text: the layout both renderers draw.

One row per explained target (or per sample and output node); each row holds the
whole sequence, wrapped into lines of at most ``line_chars`` characters as text
wraps, so that thousands of tokens stay readable. A token takes as many character
cells as its text (at least one; without token strings every token is one cell,
a heat strip). Colours diverge from white at 0, with limits symmetric about 0.

Shared by :func:`innsight.plotting.plot_tokens` (static and interactive),
:func:`innsight.plotting.tokens_html` and ``plot(layout="strip")``.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from innsight._validation import describe, is_int
from innsight.plotting.colours import MIDDLE, NEGATIVE, POSITIVE

#: Characters per line by default (as a page of text).
LINE_CHARS = 80
#: At most this many lines per figure by default: longer texts get longer lines.
MAX_LINES = 60
#: Widest line by default, in characters (about 25 inches of 7 pt monospace text).
MAX_LINE_CHARS = 400
#: Fewest character cells across a figure (a short sequence leaves room on the right).
MIN_SPAN = 30
#: Tiles whose |value| is above this fraction of the limit get white text.
DARK = 0.55
#: Shown for tokens that would draw as nothing (empty, or white space alone).
_VISIBLE = {"\n": "\u21b5", "\t": "\u21e5", "\r": "\u240d"}


@dataclass
class TokenLayout:
    """Where every token of every row is drawn.

    ``frame`` has one row per (row, token): ``row`` (label, categorical in row
    order), ``position`` (0-based token index), ``token`` (its text as shown),
    ``value``, ``x0``/``x1`` (character cells along its line), ``line`` (0-based,
    counted over all rows from the top) and ``shade`` (``value / limit`` in [-1, 1]).
    ``limit`` is the largest |value| (the colour scale is ``[-limit, limit]``),
    ``line_chars`` the widest line drawn.
    """

    frame: pd.DataFrame
    row_labels: list[str]
    lines_per_row: int
    line_chars: int
    limit: float
    has_text: bool

    @property
    def span(self) -> int:
        """Character cells across the figure: the widest line, or more to fit the
        row names (about a cell per character) and at least :data:`MIN_SPAN`."""
        return max(self.line_chars, MIN_SPAN, *(len(label) for label in self.row_labels))

    @property
    def n_lines(self) -> int:
        return self.lines_per_row * len(self.row_labels)


def check_values(values: Any, name: str = "relevance") -> np.ndarray:
    """``values`` as a float array ``(n_rows, n_tokens)`` (a 1-D array is one row);
    tensors are detached. Non-finite values are refused."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as error:
        raise TypeError(f"`{name}` must be an array of numbers (n_targets, n_tokens), got "
                        f"{describe(values)}.") from error
    array = array[None] if array.ndim == 1 else array
    if array.ndim != 2 or array.shape[1] == 0 or array.shape[0] == 0:
        raise ValueError(f"`{name}` must be an array of shape (n_targets, n_tokens) or "
                         f"(n_tokens,) with at least one token, got shape {np.shape(values)}.")
    if not np.isfinite(array).all():
        raise ValueError(f"`{name}` must be finite, got {int((~np.isfinite(array)).sum())} "
                         "NaN or infinite values.")
    return array


def check_labels(labels: Any, n: int, name: str, what: str) -> list[str] | None:
    """``labels`` (None or ``n`` strings) as a list of str."""
    if labels is None:
        return None
    if hasattr(labels, "tolist") and not isinstance(labels, (list, tuple)):
        labels = labels.tolist()
    if isinstance(labels, str) or not isinstance(labels, Sequence) or not all(
            isinstance(t, str) for t in labels):
        raise TypeError(f"`{name}` must be a list of str, one per {what}, or None, got "
                        f"{describe(labels)}.")
    if len(labels) != n:
        raise ValueError(f"`{name}` must hold one str per {what} ({n}), got {len(labels)}.")
    return list(labels)


def shown(token: str) -> str:
    """A token's text as drawn: line breaks and tabs as visible signs, nothing empty."""
    text = "".join(_VISIBLE.get(c, c) for c in token)
    return text if text.strip() else "\u2423" * max(1, len(text))


def wrap(widths: np.ndarray, line_chars: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy line breaking of tokens ``widths`` (cells): each token's line and first
    cell; a token wider than a line gets a line of its own."""
    lines, starts = np.empty(len(widths), dtype=int), np.empty(len(widths), dtype=float)
    line, at = 0, 0.0
    for i, width in enumerate(widths):  # over tokens, once for all rows
        if at > 0 and at + width > line_chars:
            line, at = line + 1, 0.0
        lines[i], starts[i] = line, at
        at += width
    return lines, starts


def default_line_chars(total_chars: float, n_rows: int) -> int:
    """:data:`LINE_CHARS`, or longer lines (up to :data:`MAX_LINE_CHARS`) where the
    rows would need more than :data:`MAX_LINES` lines."""
    needed = total_chars * n_rows / MAX_LINES
    return int(min(MAX_LINE_CHARS, max(LINE_CHARS, np.ceil(needed))))


def token_layout(values: np.ndarray, tokens: list[str] | None, row_labels: list[str],
                 line_chars: int | None = None, limit: float | None = None) -> TokenLayout:
    """The layout of ``values`` ``(n_rows, n_tokens)``: every row wrapped alike.

    ``limit`` (default: the largest |value|, or 1 where all are 0) sets the
    symmetric colour scale.
    """
    n_rows, n_tokens = values.shape
    texts = [shown(t) for t in tokens] if tokens is not None else [""] * n_tokens
    widths = np.array([max(1, len(t)) for t in texts], dtype=float)
    if line_chars is None:
        line_chars = default_line_chars(widths.sum(), n_rows)
    elif not is_int(line_chars) or isinstance(line_chars, bool) or line_chars < 1:
        raise ValueError(f"`line_chars` must be a positive int or None, got {describe(line_chars)}.")
    lines, starts = wrap(widths, int(line_chars))
    per_row = int(lines[-1]) + 1
    if limit is None:
        limit = float(np.abs(values).max()) or 1.0
    rows = np.repeat(np.arange(n_rows), n_tokens)
    frame = pd.DataFrame({
        "row": pd.Categorical.from_codes(rows, categories=row_labels),
        "position": np.tile(np.arange(n_tokens), n_rows),
        "token": np.tile(np.asarray(texts, dtype=object), n_rows),
        "value": values.ravel(),
        "x0": np.tile(starts, n_rows), "x1": np.tile(starts + widths, n_rows),
        "line": rows * per_row + np.tile(lines, n_rows),
        "shade": np.clip(values.ravel() / limit, -1.0, 1.0),
    })
    used = int(np.ceil((starts + widths).max()))  # a short sequence: a short line
    return TokenLayout(frame, row_labels, per_row, used, float(limit), has_text=tokens is not None)


def _blend(shade: np.ndarray) -> np.ndarray:
    """Fill colours ``"#rrggbb"`` of shades in [-1, 1]: white at 0, blue at -1, red at 1
    (linear in RGB, as the renderers' colour scales)."""
    def rgb(colour: str) -> np.ndarray:
        return np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)], dtype=float)

    end = np.where(shade[:, None] < 0, rgb(NEGATIVE), rgb(POSITIVE))
    mixed = rgb(MIDDLE) + np.abs(shade)[:, None] * (end - rgb(MIDDLE))
    return np.array([f"#{r:02x}{g:02x}{b:02x}" for r, g, b in np.rint(mixed).astype(int)])


def text_colours(shade: np.ndarray) -> np.ndarray:
    """Black text, white on the darkest tiles."""
    return np.where(np.abs(shade) > DARK, "white", "black")


class TokenHTML(str):
    """HTML text that a notebook shows rendered (``_repr_html_``); a ``str`` otherwise."""

    def _repr_html_(self) -> str:
        return str(self)


def layout_html(layout: TokenLayout, value_name: str) -> TokenHTML:
    """Plain HTML of a layout: a block per row, its tokens as ``<span>`` coloured by
    value (the browser wraps them), each with its position and value as a tooltip."""
    frame = layout.frame
    fills, inks = _blend(frame["shade"].to_numpy()), text_colours(frame["shade"].to_numpy())
    spans = [f'<span style="background:{fill};color:{ink}" title="{pos}: {value:.4g}">'
             f"{html.escape(token) if layout.has_text else '&nbsp;'}</span>"
             for fill, ink, pos, value, token in zip(fills, inks, frame["position"],
                                                     frame["value"], frame["token"])]
    n_tokens = len(frame) // len(layout.row_labels)
    blocks = [f'<div class="innsight-row"><div class="innsight-target">{html.escape(label)}</div>'
              f'<div class="innsight-tokens">{"".join(spans[r * n_tokens:(r + 1) * n_tokens])}'
              "</div></div>" for r, label in enumerate(layout.row_labels)]
    style = ("<style>.innsight-tokens{font-family:monospace;white-space:pre-wrap;"
             "line-height:1.7;margin-bottom:0.6em}.innsight-tokens span{padding:1px 0;"
             "border-radius:2px}.innsight-target{font-weight:bold;margin-top:0.3em}</style>")
    scale = (f'<div class="innsight-scale">{html.escape(value_name)}: '
             f'<span style="background:{NEGATIVE};color:white">&nbsp;-{layout.limit:.3g}&nbsp;</span>'
             f'<span style="background:{MIDDLE}">&nbsp;0&nbsp;</span>'
             f'<span style="background:{POSITIVE};color:white">&nbsp;{layout.limit:.3g}&nbsp;</span>'
             "</div>")
    return TokenHTML(f'<div class="innsight-token-plot">{style}{scale}{"".join(blocks)}</div>')
