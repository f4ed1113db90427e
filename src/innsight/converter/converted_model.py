"""The converted graph: typed layers in topological order."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

import torch
from torch import Tensor, nn

from innsight._validation import describe
from innsight.converter.names import Names, default_names
from innsight.layers import Layer


class ConvertedModel(nn.Module):
    """A model as a graph of :class:`~innsight.layers.Layer` objects.

    Layer ``i`` reads the outputs of the layers ``input_layers[i]`` (all
    earlier in the list). ``input_nodes[k]`` is the ``Input`` layer that
    receives model input ``k``; ``output_nodes[k]`` is the layer whose output
    is model output ``k``. Shapes (``input_dim``, ``output_dim``) exclude the
    batch axis and are channels first.

    Calling the model with a tensor ``(batch, *input_dim[0])`` (or a list of
    tensors, one per input) returns the output tensor (or a list, one per
    output). Intermediate values are freed after their last use.
    """

    def __init__(
        self,
        layers: Sequence[Layer],
        layer_names: Sequence[str],
        input_layers: Sequence[Sequence[int]],
        input_nodes: Sequence[int],
        output_nodes: Sequence[int],
        input_names: list[Names],
        output_names: list[Names],
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.layer_names = list(layer_names)
        self.input_layers = [tuple(reads) for reads in input_layers]
        self.input_nodes = list(input_nodes)
        self.output_nodes = list(output_nodes)
        self.input_names = input_names
        self.output_names = output_names
        self.output_layers = readers_of(self.input_layers)
        self._input_position = {node: k for k, node in enumerate(self.input_nodes)}
        self._free_after = last_uses(self.input_layers, keep=set(self.output_nodes))
        self._may_overwrite = [self._may_overwrite_first_input(i) for i in range(len(self.layers))]
        # Follows .to(dtype) / .to(device) so inputs can be moved to match.
        self.register_buffer("_dtype_marker", torch.zeros(()), persistent=False)

    @property
    def input_dim(self) -> list[tuple[int, ...]]:
        return [self.layers[i].output_dim for i in self.input_nodes]

    @property
    def output_dim(self) -> list[tuple[int, ...]]:
        return [self.layers[i].output_dim for i in self.output_nodes]

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype_marker.dtype

    @property
    def device(self) -> torch.device:
        return self._dtype_marker.device

    def forward(self, x: Tensor | Sequence[Tensor]) -> Tensor | list[Tensor]:
        """Outputs for ``x``: one tensor ``(batch, *output_dim[0])`` or a list per output,
        in torch's default layout (convolutions without gradients compute channels last)."""
        outputs = [out.contiguous() for out in self.run_nodes(x, self.output_nodes)]
        return outputs[0] if len(outputs) == 1 else outputs

    #: The graph takes no per-sample arguments besides its inputs (see ``run_nodes``).
    per_sample = False

    def run_nodes(self, x: Tensor | Sequence[Tensor], nodes: Sequence[int],
                  sample: Tensor | None = None,
                  given: Mapping[int, Tensor] | None = None) -> list[Tensor]:
        """The values of the layers ``nodes`` for ``x``; only the layers they need run, and
        all other values are freed early. ``sample`` (the data sample of each row, for
        models with per-sample arguments) is not needed here.

        ``given`` replaces the values of some layers ``{layer: (batch, *output_dim)}``
        (layer attribution): layers needed only to compute them are not run.
        """
        values = self._run(self.check_input(x), keep=set(nodes), given=given)
        return [values[i] for i in nodes]

    def layer_outputs(self, output_layer: Any) -> tuple[list[int], list[Names]]:
        """The layers ``output_layer`` names (a name in ``layer_names`` or a position in it,
        or a list of them) and labels ``Y1..`` for their outputs' axes."""
        nodes = [self.layer_index(name, "output_layer")
                 for name in (output_layer if isinstance(output_layer, (list, tuple))
                              else [output_layer])]
        if not nodes:
            raise ValueError("`output_layer` must name at least one layer, got an empty list.")
        return nodes, [default_names(self.layers[i].output_dim, output=True) for i in nodes]

    def layer_index(self, name: Any, arg_name: str) -> int:
        """The position of the layer ``name`` (a unique name in ``layer_names``, or its
        position) in the graph."""
        if isinstance(name, int) and not isinstance(name, bool):
            if not 0 <= name < len(self.layers):
                raise ValueError(f"`{arg_name}` {name} is no layer position: the model has "
                                 f"{len(self.layers)} layers (valid: 0..{len(self.layers) - 1}).")
            return name
        if not isinstance(name, str):
            raise TypeError(f"`{arg_name}` must be a layer name (str) from "
                            f"conv.model.layer_names or its position (int), got {describe(name)}.")
        found = [i for i, known in enumerate(self.layer_names) if known == name]
        if not found:
            close = difflib.get_close_matches(name, self.layer_names, n=5)
            hint = f"; close names: {close}" if close else ""
            raise ValueError(f"`{arg_name}` {name!r} is no layer of the model (see "
                             f"conv.model.layer_names){hint}.")
        if len(found) > 1:
            raise ValueError(f"`{arg_name}` {name!r} names {len(found)} layers (the model's "
                             f"dict repeats it), at positions {found} of conv.model.layer_names; "
                             "pass the position of the one to explain.")
        return found[0]

    def node_values(self, x: Tensor | Sequence[Tensor],
                    given: Mapping[int, Tensor] | None = None,
                    keep: set[int] | None = None) -> list[Tensor | None]:
        """The output of every layer for ``x``, in layer order (for backward walks);
        ``given`` replaces the values of some layers (see :meth:`run_nodes`). With
        ``keep``, only the layers those need run and only their values (and the model
        outputs among them) are kept, the others ``None``."""
        return self._run(self.check_input(x), keep=keep, given=given)

    @property
    def explained_inputs(self) -> list[int]:
        """The positions of the explained inputs (the others: attention masks, token
        type ids, given per call as ``extra_args``)."""
        return [k for k, node in enumerate(self.input_nodes) if self.layers[node].explained]

    def token_embedding(self, k: int) -> int | None:
        """The :class:`~innsight.layers.tokens.Embedding` layer that reads input ``k``
        (token ids), ``None`` for an input of real numbers; an input of integers that
        no embedding or several read is refused (nothing to explain it by)."""
        node = self.input_nodes[k]
        if self.layers[node].kind == "float":
            return None
        found = [j for j in self.output_layers[node] if self.layers[j].type_name == "Embedding"]
        if len(found) != 1:
            raise ValueError(
                f"Input {k} ('{self.layer_names[node]}') holds integers and is explained, but "
                f"{len(found)} embedding layers read it; token ids are explained through the "
                "one embedding that looks them up (mark other integer inputs explained=False).")
        return found[0]

    def needed(self, nodes: Iterable[int], stop: AbstractSet[int] = frozenset()) -> set[int]:
        """The layers whose values ``nodes`` depend on (``nodes`` included), not looking
        past the layers in ``stop``."""
        seen = set(nodes)
        stack = [i for i in seen if i not in stop]
        while stack:
            for j in self.input_layers[stack.pop()]:
                if j not in seen:
                    seen.add(j)
                    if j not in stop:
                        stack.append(j)
        return seen

    def explained_nodes(self, ignore_last_act: bool) -> list[int]:
        """Per model output, the layer a method explains: with ``ignore_last_act``, the
        input of an output layer that is an activation (the logits before a softmax)."""
        if not ignore_last_act:
            return list(self.output_nodes)
        return [
            self.input_layers[node][0] if self.layers[node].is_activation else node
            for node in self.output_nodes
        ]

    def _may_overwrite_first_input(self, i: int) -> bool:
        """Whether layer ``i`` may write into the memory of the first value it reads:
        it is that value's last reader, and the value is no output, no view (nor the
        user's input) and has no view taken of it by another reader."""
        reads = self.input_layers[i]
        if not reads or not self.layers[i].can_overwrite:
            return False
        first = reads[0]
        return (
            first in self._free_after[i]
            and reads.count(first) == 1
            and not self.layers[first].returns_view
            and not any(self.layers[k].returns_view for k in self.output_layers[first])
        )

    def _run(self, inputs: list[Tensor], keep: set[int] | None,
             given: Mapping[int, Tensor] | None = None) -> list[Any]:
        """Every layer's value; with ``keep`` given, only the layers that ``keep`` needs
        run, and values are freed after their last use unless they are model outputs or
        in ``keep``. Without autograd, layers that may reuse a dead input's memory do (as
        in-place ops in torch models). Layers in ``given`` take that value."""
        values: list[Any] = [None] * len(self.layers)
        overwrite = keep is not None and not torch.is_grad_enabled()
        needed = None if keep is None else self.needed(keep, stop=set(given or ()))
        for i, (layer, reads) in enumerate(zip(self.layers, self.input_layers)):
            if given and i in given:
                values[i] = given[i]
            elif needed is not None and i not in needed:
                pass
            elif reads:
                args = [values[j] for j in reads]
                if (overwrite and self._may_overwrite[i] and reads[0] not in keep
                        and not (given and reads[0] in given)):
                    values[i] = layer.forward_overwriting(*args)
                else:
                    values[i] = layer(*args)
            else:
                values[i] = layer(inputs[self._input_position[i]])
            if keep is not None:
                for j in self._free_after[i]:
                    if j not in keep:
                        values[j] = None
        return values

    def check_input(self, x: Any) -> list[Tensor]:
        """Check ``x`` against ``input_dim`` and move it to the model's dtype and device."""
        xs = list(x) if isinstance(x, (list, tuple)) else [x]
        dims = self.input_dim
        if len(xs) != len(dims):
            raise ValueError(
                f"`x` must hold {len(dims)} tensor(s), one per input layer, got {len(xs)}."
            )
        batch = None
        for k, (value, dim) in enumerate(zip(xs, dims)):
            if not isinstance(value, Tensor):
                raise TypeError(f"`x` must hold torch tensors, got {describe(value)} for input {k}.")
            if tuple(value.shape[1:]) != dim or value.ndim != len(dim) + 1:
                raise ValueError(
                    f"`x` for input {k} has shape {tuple(value.shape)}, expected "
                    f"(batch, {', '.join(map(str, dim))})."
                )
            if batch is not None and value.shape[0] != batch:
                raise ValueError(
                    f"`x` tensors must share the batch size; input 0 has {batch}, "
                    f"input {k} has {value.shape[0]}."
                )
            batch = value.shape[0]
        return [self.check_integers(value, k, f"`x` for input {k}")
                .to(dtype=self.layers[node].value_dtype(self.dtype), device=self.device)
                for k, (value, node) in enumerate(zip(xs, self.input_nodes))]

    def vocab_size(self, k: int) -> int | None:
        """The number of token ids input ``k`` may hold: the smallest vocabulary of the
        embeddings reading it; ``None`` where no embedding reads it."""
        return min((self.layers[j].vocab_size for j in self.output_layers[self.input_nodes[k]]
                    if self.layers[j].type_name == "Embedding"), default=None)

    def check_integers(self, value: Tensor, k: int, what: str) -> Tensor:
        """``value`` for input ``k``; for an input of integers it must hold integers (token
        ids in ``[0, vocab)`` of the embeddings reading it), else ``what`` is refused."""
        layer = self.layers[self.input_nodes[k]]
        if layer.kind == "float":
            return value
        if value.is_floating_point() or value.is_complex():
            raise TypeError(f"{what} must hold integers ({layer.kind}: token ids or a mask), "
                            f"got a tensor of dtype {value.dtype}.")
        vocab = self.vocab_size(k)
        if vocab is not None and value.numel() and (
                int(value.min()) < 0 or int(value.max()) >= vocab):
            raise ValueError(f"{what} holds token ids from {int(value.min())} to "
                             f"{int(value.max())}; the embedding's vocabulary is 0..{vocab - 1}.")
        return value


def readers_of(input_layers: Sequence[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """For each layer, the layers that read it, in order (each once)."""
    readers: list[list[int]] = [[] for _ in input_layers]
    for j, reads in enumerate(input_layers):
        for i in dict.fromkeys(reads):
            readers[i].append(j)
    return [tuple(found) for found in readers]


def last_uses(input_layers: Sequence[tuple[int, ...]], keep: set[int]) -> list[list[int]]:
    """For each layer, the nodes whose value is no longer needed once it has run."""
    last_reader = {}
    for i, reads in enumerate(input_layers):
        for j in reads:
            last_reader[j] = i
    free_after: list[list[int]] = [[] for _ in input_layers]
    for node, reader in last_reader.items():
        if node not in keep:
            free_after[reader].append(node)
    return free_after
