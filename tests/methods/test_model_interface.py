"""Every kind of model a method explains implements the one model interface."""

from __future__ import annotations

import torch
from torch import nn

import innsight as ins
from innsight.methods.model_interface import ExplainableModel, TorchModule
from innsight.methods.opaque_model import OpaqueModel


def test_the_three_kinds_of_model_implement_the_interface():
    module = nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=1)).eval()
    x = torch.randn(5, 4)
    kinds = {
        "converted": ins.convert(module, input_dim=[4]).model,
        "opaque": OpaqueModel(module, None, x, True, torch.float32, torch.device("cpu"), None),
        "torch module": TorchModule(module, x, torch.float32),
    }
    with torch.no_grad():
        expected = module(x)
    for name, model in kinds.items():
        assert isinstance(model, ExplainableModel), name
        assert model.input_dim == [(4,)] and model.output_dim == [(3,)], name
        (out,) = model.run_nodes([x], model.output_nodes)
        torch.testing.assert_close(out, expected, msg=name)
    # only the graph can look inside: the explained node of the converted model is the
    # softmax's input, the other kinds explain what the model returns
    converted = kinds["converted"]
    assert converted.explained_nodes(True) != converted.output_nodes
    assert kinds["torch module"].explained_nodes(True) == [0]
