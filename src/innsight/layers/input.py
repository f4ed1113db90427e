"""The input layer: where one model input enters the graph."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from innsight._validation import is_number
from innsight.layers.base import Layer
from innsight.layers.rules import ALL_PATHS

#: The kinds of values an input holds (``dtype``): real numbers in the model's precision,
#: or integers (token ids, attention masks) and booleans, which are never differentiated.
INPUT_DTYPES = {"float": None, "int64": torch.int64, "bool": torch.bool}


class Input(Layer):
    """Passes one model input on unchanged, shape ``(batch, *input_dim)``.

    Its position in ``input_nodes`` tells which model input it receives. ``dtype``
    ``"int64"`` or ``"bool"`` makes it hold integers (token ids, masks). An input with
    ``explained=False`` (an attention mask, token type ids) is not explained: methods
    take it per call (``extra_args``), or fill it with ``default`` where that is a number.
    """

    type_names = ("Input",)
    n_inputs = 0
    optional = {"dtype": "float", "explained": True, "default": None}
    returns_view = True  # the user's own tensor
    rule_paths = ALL_PATHS  # the walks end here

    def __init__(self, type_name: str, dtype: Any, explained: Any, default: Any) -> None:
        super().__init__(type_name)
        if dtype not in INPUT_DTYPES:
            raise ValueError(f"`dtype` must be one of {list(INPUT_DTYPES)}, got {dtype!r}.")
        if not isinstance(explained, bool):
            raise ValueError(f"`explained` must be True or False, got {explained!r}.")
        if default is not None and (explained or not is_number(default)):
            raise ValueError("`default` must be a number, given for an input with "
                             f"explained=False only; got {default!r}.")
        self.kind, self.explained, self.default = dtype, explained, default

    def value_dtype(self, float_dtype: torch.dtype) -> torch.dtype:
        """The dtype of this input's values in a model computing in ``float_dtype``."""
        return INPUT_DTYPES[self.kind] or float_dtype

    def forward(self, x: Tensor) -> Tensor:
        return x

    def get_params(self) -> dict[str, Any]:
        defaults = self.optional
        values = {"dtype": self.kind, "explained": self.explained, "default": self.default}
        return {k: v for k, v in values.items() if v != defaults[k]}
