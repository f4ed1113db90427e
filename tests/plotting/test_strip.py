"""``plot(layout="strip")``: sequence inputs as heat strips over tokens or time steps.

Expected values are recomputed from ``get_result()`` with numpy (the features of
each sequence position summed, as ``aggr_channels="sum"`` says), never taken
from the plotting code.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import innsight as ins

WORDS = ["I", " really", " liked", " this", " movie", " !"]


class Recurrent(nn.Module):
    """An LSTM over (6 tokens, 4 features), batch first, its last state into 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(4, 5, batch_first=True)
        self.fc = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.fc(out[:, -1])


@pytest.fixture(scope="module")
def recurrent() -> ins.methods.result.Result:
    torch.manual_seed(0)
    conv = ins.convert(Recurrent().eval(), input_dim=[6, 4],
                       input_names=[[WORDS, ["f1", "f2", "f3", "f4"]]],
                       output_names=[["neg", "neu", "pos"]])
    x = torch.randn(3, 6, 4, generator=torch.Generator().manual_seed(1))
    return ins.run_lrp(conv, x, rule_name="epsilon")


@pytest.fixture(scope="module")
def conv1d() -> ins.Converter:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(3, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 10, 2)).eval()
    return ins.convert(model, input_dim=[3, 12])


def _rows(frame) -> dict[str, np.ndarray]:
    """Each row's values in token order."""
    return {str(row): part.sort_values("position")["value"].to_numpy()
            for row, part in frame.groupby("row", observed=True)}


def test_tokens_first_inputs_strip_along_the_tokens_with_their_names(recurrent):
    plot = recurrent.plot(data_idx=[0, 2], layout="strip", sequence_axis=0)
    values = recurrent.get_result().astype(float)  # (n, tokens, features, nodes)
    rows = _rows(plot.data)
    assert len(rows) == 2 * 3
    for d in (0, 2):
        for j, node in enumerate(["neg", "neu", "pos"]):
            (label,) = [r for r in rows if r.startswith(f"sample {d} · {node} ")]
            np.testing.assert_allclose(rows[label], values[d, :, :, j].sum(axis=1), rtol=1e-6)
            assert "pred:" in label and "sum:" in label
    shown = plot.data[plot.data["row"] == next(iter(rows))].sort_values("position")["token"]
    assert shown.tolist() == WORDS
    shown_values = values[[0, 2]].sum(axis=2)
    low, high = next(s for s in plot.scales if "fill" in s.aesthetics).limits
    assert low == -high and high == pytest.approx(np.abs(shown_values).max())


def test_signals_strip_along_the_signal_axis_as_plain_cells(conv1d):
    x = torch.randn(2, 3, 12, generator=torch.Generator().manual_seed(2))
    res = ins.run_grad(conv1d, x, times_input=True)
    plot = res.plot(data_idx=1, layout="strip", show_preds=False)
    rows = _rows(plot.data)
    assert list(rows) == ["sample 1 · Y1", "sample 1 · Y2"]
    expected = res.get_result()[1].astype(float).sum(axis=0)  # (L, nodes): channels summed
    for j, label in enumerate(rows):
        np.testing.assert_allclose(rows[label], expected[:, j], rtol=1e-6)
    # default names (L1, L2, ...): one cell per step, no text
    np.testing.assert_array_equal(plot.data["x1"] - plot.data["x0"], 1.0)
    assert not any(type(layer.geom).__name__ == "geom_text" for layer in plot.layers)


def test_channels_last_data_strip_along_its_first_axis(conv1d):
    x = torch.randn(2, 12, 3, generator=torch.Generator().manual_seed(3))  # (n, L, C)
    res = ins.run_grad(conv1d, x, channels_first=False)
    values = res.get_result().astype(float)  # (n, L, C, nodes)
    for axis in (None, 0):
        rows = _rows(res.plot(layout="strip", sequence_axis=axis).data)
        np.testing.assert_allclose(next(iter(rows.values())), values[0, :, :, 0].sum(axis=1),
                                   rtol=1e-6)
    across = _rows(res.plot(layout="strip", sequence_axis=1, aggr_channels="mean").data)
    np.testing.assert_allclose(next(iter(across.values())), values[0, :, :, 0].mean(axis=0),
                               rtol=1e-6)


def test_one_axis_token_inputs_show_their_tokens():
    torch.manual_seed(0)
    tokens = ["the", " cat", " sat", " on", " the", " mat"]
    conv = ins.convert(nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 2)).eval(),
                       input_dim=[6], input_names=[tokens])
    res = ins.run_grad(conv, torch.randn(2, 6), times_input=True)
    plot = res.plot(layout="strip", output_idx=[1])
    frame = plot.data.sort_values("position")
    assert frame["token"].tolist() == tokens  # repeated tokens stay in place
    np.testing.assert_allclose(frame["value"], res.get_result()[0, :, 1], rtol=1e-6)


def test_interactive_strip_has_a_bar_per_position_and_row(recurrent):
    pytest.importorskip("plotly")
    fig = recurrent.plot(data_idx=[0, 1], output_idx=[2], layout="strip", sequence_axis=0,
                         as_plotly=True, show_preds=False)
    (bars,) = fig.data
    expected = recurrent.get_result()[[0, 1], :, :, 2].astype(float).sum(axis=2)
    np.testing.assert_allclose(np.asarray(bars.marker.color), expected.ravel(), rtol=1e-6)
    assert list(bars.text) == WORDS * 2
    assert fig.layout.coloraxis.cmin == -fig.layout.coloraxis.cmax
    assert [a.text for a in fig.layout.annotations] == ["<b>sample 0 · pos</b>",
                                                       "<b>sample 1 · pos</b>"]


def test_comparison_draws_a_row_per_model(conv1d):
    x = torch.randn(2, 3, 12, generator=torch.Generator().manual_seed(4))
    cmp = ins.compare_models({"a": conv1d, "b": conv1d}, x, method="Gradient", output_idx=[0])
    plot = cmp.plot(layout="strip", show_preds=False)
    rows = _rows(plot.data)
    assert list(rows) == ["sample 0 · Y1 (a)", "sample 0 · Y1 (b)"]
    np.testing.assert_allclose(rows["sample 0 · Y1 (a)"], rows["sample 0 · Y1 (b)"])


def test_strip_errors(recurrent, conv1d):
    image = ins.run_grad(ins.convert(nn.Sequential(nn.Conv2d(1, 1, 3), nn.Flatten()).eval(),
                                     input_dim=[1, 4, 4]), torch.randn(1, 1, 4, 4))
    with pytest.raises(ValueError, match=r"input layer 0 holds images; use layout='facets'"):
        image.plot(layout="strip", output_idx=[0])
    with pytest.raises(ValueError, match=r"give `aggr_channels`"):
        recurrent.plot(layout="strip", aggr_channels=None)
    with pytest.raises(ValueError, match=r"`sequence_axis` chooses the sequence axis of "
                                         r"layout='strip', got layout='facets'"):
        recurrent.plot(sequence_axis=0)
    with pytest.raises(ValueError, match=r"`sequence_axis` must be 0, 1 .* got 2"):
        recurrent.plot(layout="strip", sequence_axis=2)
    with pytest.raises(ValueError, match=r"leave show_input=False and top_k=None"):
        recurrent.plot(layout="strip", show_input=True)


class TwoSequences(nn.Module):
    """Tokens (6,) and a signal (3, 10) in, two classes out."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens = nn.Linear(6, 3)
        self.signal = nn.Conv1d(3, 2, 3)
        self.out = nn.Linear(3 + 16, 2)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.out(torch.cat([torch.relu(self.tokens(x)),
                                   torch.relu(self.signal(y)).flatten(1)], 1))


def test_several_input_layers_get_a_strip_and_a_colour_scale_each():
    torch.manual_seed(0)
    conv = ins.convert(TwoSequences().eval(), input_dim=[[6], [3, 10]],
                       input_names=[[WORDS], [["a", "b", "c"], [f"t{i}" for i in range(10)]]])
    gen = torch.Generator().manual_seed(5)
    res = ins.run_grad(conv, [torch.randn(2, 6, generator=gen), torch.randn(2, 3, 10, generator=gen)])
    expected = [res.get_result()[0][0].astype(float)[0],  # (tokens, nodes)
                res.get_result()[0][1].astype(float)[0].sum(axis=0)]  # (steps, nodes)
    composed = res.plot(layout="strip", show_preds=False)
    assert len(composed) == 2  # beside each other
    pytest.importorskip("plotly")
    fig = res.plot(layout="strip", as_plotly=True, show_preds=False)
    assert fig.layout.barmode == "overlay"  # bars of several traces at their own rows
    for n, (bars, values) in enumerate(zip(fig.data, expected)):
        np.testing.assert_allclose(np.asarray(bars.marker.color), values.T.ravel(), rtol=1e-6)
        axis = fig.layout["coloraxis" if n == 0 else f"coloraxis{n + 1}"]
        assert axis.cmax == -axis.cmin == pytest.approx(np.abs(values).max())
    assert list(fig.data[1].text) == [f"t{i}" for i in range(10)] * 2
