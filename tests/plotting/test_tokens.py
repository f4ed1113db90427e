"""Token plots: relevance over tokens as coloured text (plotnine, plotly and plain HTML).

Expected data are stated from the arguments (values, token strings, line width),
never read back from the plotting code: the colour limits are symmetric about 0 at
the largest |value|, every token of every target is one tile carrying its text,
and the lines wrap as greedy text wrapping does.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from innsight.plotting import plot_tokens, tokens_html

TOKENS = ["The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", "\n", "."]


def _values(rows: int = 3, n: int = len(TOKENS)) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(rows, n))


def _rect_frame(plot):
    return plot.layers[0].data if plot.layers[0].data is not None else plot.data


def _scale(plot, aesthetic: str):
    return next(s for s in plot.scales if aesthetic in s.aesthetics)


def test_static_plot_has_a_tile_per_token_and_target_centred_on_zero():
    values = _values()
    plot = plot_tokens(values, TOKENS, ["a", "b", "c"], title="LRP")
    frame = plot.data
    assert len(frame) == values.size
    assert list(frame["row"].cat.categories) == ["a", "b", "c"]
    for r, name in enumerate("abc"):
        row = frame[frame["row"] == name].sort_values("position")
        np.testing.assert_array_equal(row["value"], values[r])
    low, high = _scale(plot, "fill").limits
    assert low == -high == -np.abs(values).max()
    text = next(layer for layer in plot.layers if type(layer.geom).__name__ == "geom_text")
    shown = frame[frame["row"] == "a"].sort_values("position")["token"].tolist()
    # every token's own text, line breaks as a visible sign
    assert shown == [t if t != "\n" else "\u21b5" for t in TOKENS]
    assert text.mapping["label"] == "token"
    assert plot.facet.__class__.__name__ == "facet_wrap"


@pytest.mark.parametrize("line_chars", [12, 20, 40])
def test_lines_wrap_as_greedy_text_wrapping(line_chars):
    tokens = [f" w{i}" * (1 + i % 4) for i in range(60)]
    frame = plot_tokens(_values(2, 60), tokens, line_chars=line_chars).data
    one = frame[frame["row"] == "target 0"].sort_values("position")
    widths = np.array([len(t) for t in tokens])
    np.testing.assert_array_equal(one["x1"] - one["x0"], widths)
    lines = one["line"].to_numpy()
    assert (np.diff(lines) >= 0).all() and lines[0] == 0
    for line in np.unique(lines):
        on = widths[lines == line]
        assert on.sum() <= line_chars or len(on) == 1  # a line holds what fits
        # starts at 0 and runs on without gaps
        np.testing.assert_array_equal(one["x0"][lines == line], np.cumsum(on) - on)
        if line > 0:  # the first token of a line did not fit on the line before
            assert widths[lines == line - 1].sum() + on[0] > line_chars
    # the second target is wrapped alike, on its own lines below
    two = frame[frame["row"] == "target 1"].sort_values("position")
    np.testing.assert_array_equal(two["line"].to_numpy(), lines + lines.max() + 1)


def test_long_sequences_wrap_into_many_lines_within_the_size_limit():
    n = 3000
    plot = plot_tokens(np.random.default_rng(1).normal(size=n), [" tok"] * n)
    lines = plot.data["line"].max() + 1
    chars = plot.data["x1"].max()
    assert lines >= 30 and chars <= 400  # wrapped, not one strip of 12000 characters
    width, height = plot.theme.getp("figure_size")
    assert width <= 25 and height <= 25


def test_without_tokens_each_token_is_one_cell_of_a_heat_strip():
    plot = plot_tokens(torch.arange(-3.0, 4.0))
    frame = plot.data
    np.testing.assert_array_equal(frame["x0"], np.arange(7))
    assert not any(type(layer.geom).__name__ == "geom_text" for layer in plot.layers)
    assert list(frame["row"].cat.categories) == ["target 0"]


def test_normalize_scales_each_row_to_its_largest_magnitude():
    values = np.array([[1.0, -4.0, 2.0], [0.5, 0.25, -0.1]])
    plot = plot_tokens(values, ["a", "b", "c"], normalize=True)
    frame = plot.data.sort_values(["row", "position"])
    expected = values / np.abs(values).max(axis=1, keepdims=True)
    np.testing.assert_allclose(frame["value"].to_numpy().reshape(2, 3), expected)
    assert _scale(plot, "fill").limits == (-1.0, 1.0)


def test_interactive_plot_has_the_tokens_as_bar_texts_and_a_symmetric_colour_axis():
    pytest.importorskip("plotly")
    values = _values()
    fig = plot_tokens(values, TOKENS, ["a", "b", "c"], as_plotly=True)
    (bars,) = fig.data
    assert len(bars.x) == values.size
    assert list(bars.text[:len(TOKENS)]) == [t if t != "\n" else "\u21b5" for t in TOKENS]
    np.testing.assert_array_equal(np.asarray(bars.marker.color), values.ravel())
    assert fig.layout.coloraxis.cmin == -fig.layout.coloraxis.cmax == -np.abs(values).max()
    assert [a.text for a in fig.layout.annotations] == ["<b>a</b>", "<b>b</b>", "<b>c</b>"]


def test_html_holds_every_token_escaped_with_its_value():
    values = np.array([[2.0, -1.0, 0.0]])
    page = tokens_html(values, ["<b>", " & ", "ok"], ["next"])
    assert page._repr_html_() == page
    assert "&lt;b&gt;" in page and " &amp; " in page and "ok</span>" in page
    assert page.count("<span style=\"background:") == 3 + 3  # the tokens and the scale
    assert 'title="1: -1"' in page and "next" in page


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"relevance": np.zeros((2, 3, 4))}, ValueError, r"`relevance` must be an array of shape"),
    ({"relevance": [[1.0, np.nan]]}, ValueError, r"`relevance` must be finite, got 1"),
    ({"relevance": "abc"}, TypeError, r"`relevance` must be an array of numbers"),
    ({"tokens": ["a", "b"]}, ValueError, r"`tokens` must hold one str per token .* \(3\), got 2"),
    ({"tokens": "abc"}, TypeError, r"`tokens` must be a list of str"),
    ({"target_names": ["x", "x"]}, ValueError, r"`target_names` must be distinct"),
    ({"target_names": ["x"]}, ValueError, r"`target_names` must hold one str per target"),
    ({"line_chars": 0}, ValueError, r"`line_chars` must be a positive int or None, got 0"),
    ({"normalize": "yes"}, TypeError, r"`normalize`"),
])
def test_bad_arguments_are_refused_by_name(kwargs, error, match):
    arguments = {"relevance": np.ones((2, 3))} | kwargs
    with pytest.raises(error, match=match):
        plot_tokens(**arguments)
