"""Layer attribution (``attribute_to=``) against autograd on the original torch model
(a forward hook gives or replaces the layer's activations), Captum's
LayerIntegratedGradients, and the head of the model converted on its own."""

from __future__ import annotations

import pytest
import torch
from captum.attr import LayerIntegratedGradients
from torch import Tensor, nn

import innsight as ins

TARGETS = [0, 2]


def cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1),
                         nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(5 * 4 * 4, 3)).eval()


class Residual(nn.Module):
    """conv1 -> relu -> conv2 -> relu, plus a skip connection around conv2 and its relu."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 3)
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.conv1(x))
        return self.fc(torch.flatten(h + torch.tanh(self.conv2(h)), 1))


def data(n: int = 3, seed: int = 2) -> Tensor:
    return torch.randn(n, 2, 8, 8, generator=torch.Generator().manual_seed(seed))


def run_hooked(model: nn.Module, module: nn.Module, x: Tensor,
               value: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The model's output at ``x`` with ``module``'s output replaced by ``value`` (default:
    its own output, detached), and that replacement as a leaf requiring gradients."""
    store = {}

    def hook(mod: nn.Module, args: object, out: Tensor) -> Tensor:
        store["a"] = (out if value is None else value).detach().requires_grad_(True)
        return store["a"]

    handle = module.register_forward_hook(hook)
    try:
        out = model(x)
    finally:
        handle.remove()
    return out, store["a"]


def layer_grads(model: nn.Module, module: nn.Module, x: Tensor,
                value: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Gradients of the targets w.r.t. the module's output ``(n, *dim, len(TARGETS))``,
    and that output."""
    out, a = run_hooked(model, module, x, value)
    grads = [torch.autograd.grad(out[:, t].sum(), a, retain_graph=True)[0] for t in TARGETS]
    return torch.stack(grads, -1), a.detach()


def close(actual: Tensor, expected: Tensor, tol: float = 1e-5) -> None:
    assert actual.shape == expected.shape
    error = (actual - expected).abs().max().item()
    assert error <= tol * max(expected.abs().max().item(), 1e-12), error


@pytest.mark.parametrize("times_input", [False, True])
@pytest.mark.parametrize(("make", "layer", "module"),
                         [(cnn, "1", lambda m: m[1]), (Residual, "conv2", lambda m: m.conv2)])
def test_gradient_at_layer_equals_autograd(make, layer, module, times_input):
    model = make()
    x = data()
    res = ins.run_grad(ins.convert(model, input_dim=[2, 8, 8]), x, attribute_to=layer,
                       output_idx=TARGETS, times_input=times_input)
    grads, a = layer_grads(model, module(model), x)
    expected = grads * a.unsqueeze(-1) if times_input else grads
    close(res.get_result("torch_tensor"), expected)
    assert res.attributed_to == layer
    assert f"attributed to layer '{layer}'" in str(res)
    close(res.data[0], a)  # the result keeps the activations


@pytest.mark.parametrize(("make", "layer", "module"),
                         [(cnn, "1", lambda m: m[1]), (Residual, "conv2", lambda m: m.conv2)])
def test_intgrad_at_layer_equals_captum_layer_integrated_gradients(make, layer, module):
    """Both interpolate the layer's activations between those at the reference and those at
    the input, with everything that bypasses the layer at the input."""
    model = make().double()
    x, x_ref = data().double(), data(1, seed=7).double()
    res = ins.run_intgrad(ins.convert(model, input_dim=[2, 8, 8]), x, x_ref=x_ref,
                          attribute_to=layer, output_idx=TARGETS, n=16, dtype="double")
    lig = LayerIntegratedGradients(model, module(model))
    expected = torch.stack([lig.attribute(x, baselines=x_ref, target=t, n_steps=16,
                                          method="riemann_right") for t in TARGETS], -1)
    close(res.get_result("torch_tensor"), expected, 1e-10)
    # the goal: f(x) minus f with the layer at its reference activations
    _, a_ref = run_hooked(model, module(model), x_ref)
    f_ref, _ = run_hooked(model, module(model), x, a_ref.expand(len(x), *a_ref.shape[1:]))
    goal = model(x)[:, TARGETS] - f_ref.detach()[:, TARGETS]
    close(res.decomp_goal[0], goal, 1e-10)


def test_smoothgrad_at_layer_before_a_linear_head_equals_the_gradient():
    """After the second relu the model is linear: the gradient w.r.t. the relu's output
    is the same at every noisy copy of its activations."""
    model = cnn()
    x = data()
    res = ins.run_smoothgrad(ins.convert(model, input_dim=[2, 8, 8]), x, attribute_to="3",
                             output_idx=TARGETS, n=5, noise_level=0.5, seed=0)
    grads, _ = layer_grads(model, model[3], x)
    close(res.get_result("torch_tensor"), grads)


def test_expgrad_at_layer_with_one_reference_is_difference_times_gradient():
    model = cnn()
    x, ref = data(), data(1, seed=5)
    res = ins.run_expgrad(ins.convert(model, input_dim=[2, 8, 8]), x, data_ref=ref,
                          attribute_to="3", output_idx=TARGETS, n=4, seed=0)
    grads, a = layer_grads(model, model[3], x)
    _, a_ref = run_hooked(model, model[3], ref)
    close(res.get_result("torch_tensor"), grads * (a - a_ref.detach()).unsqueeze(-1))


def test_rule_methods_at_layer_equal_the_head_converted_alone():
    """LRP relevance and DeepLift contributions stopped at a layer are those of the model's
    head (the layers after it) explained w.r.t. its input, the layer's activations."""
    model = cnn()
    x, x_ref = data(), data(1, seed=7)
    conv, head = (ins.convert(model, input_dim=[2, 8, 8]),
                  ins.convert(model[2:].eval(), input_dim=[4, 8, 8]))
    a, a_ref = model[:2](x).detach(), model[:2](x_ref).detach()
    lrp = ins.run_lrp(conv, x, attribute_to="1", output_idx=TARGETS, rule_name="epsilon")
    close(lrp.get_result("torch_tensor"),
          ins.run_lrp(head, a, output_idx=TARGETS, rule_name="epsilon").get_result("torch_tensor"))
    deeplift = ins.run_deeplift(conv, x, x_ref=x_ref, attribute_to="1", output_idx=TARGETS)
    close(deeplift.get_result("torch_tensor"),
          ins.run_deeplift(head, a, x_ref=a_ref, output_idx=TARGETS).get_result("torch_tensor"))


@pytest.mark.parametrize("rule_name", ["rescale", "reveal_cancel"])
def test_deeplift_at_a_layer_sums_to_the_goal(rule_name):
    model = cnn()
    x, x_ref = data(), data(1, seed=7)
    res = ins.run_deeplift(ins.convert(model, input_dim=[2, 8, 8]), x, x_ref=x_ref,
                           attribute_to="1", output_idx=TARGETS, rule_name=rule_name)
    goal = (model(x) - model(x_ref)).detach()[:, TARGETS]
    close(res.decomp_sum[0], goal)
    close(res.decomp_goal[0], goal)


def test_lrp_at_a_layer_is_what_the_full_walk_passes_through_it():
    model = Residual()
    x = data()
    conv = ins.convert(model, input_dim=[2, 8, 8])
    at_layer = ins.run_lrp(conv, x, attribute_to="conv2", output_idx=TARGETS,
                           rule_name="epsilon")
    report = ins.run_lrp(conv, x, output_idx=TARGETS, rule_name="epsilon",
                         keep_layers=True).layer_report()
    into = report[report["layer"] == "conv2"].pivot(index="data", columns="output_node",
                                                    values="value_in")
    close(at_layer.decomp_sum[0], torch.tensor(into.to_numpy(), dtype=torch.float32))


def test_token_layer_is_plotted_on_its_patch_grid(small_vit):
    """Tokens of a block of a vision transformer: values (n, 17 tokens, 16, T); plots
    draw them as 16 maps of 4 x 4 patches without the class token."""
    import plotnine as p9

    conv = ins.convert(small_vit, input_dim=[3, 32, 32])
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    res = ins.run_grad(conv, x, output_idx=TARGETS, times_input=True,
                       attribute_to="encoder.layers.encoder_layer_1.ln_1")
    values = res.get_result("torch_tensor")
    assert values.shape == (2, 17, 16, 2)
    maps = res.as_maps()
    expected = values[:, 1:].reshape(2, 4, 4, 16, 2).permute(0, 3, 1, 2, 4)
    assert torch.equal(maps.values[0][0], expected)
    assert maps.data[0].shape == (2, 16, 4, 4)
    assert isinstance(res.plot(data_idx=0), p9.ggplot)


NODES = [2, 0, 1]  # one output node per sample (``targets=``)


@pytest.mark.parametrize(("make", "layer", "module"),
                         [(cnn, "1", lambda m: m[1]), (Residual, "conv2", lambda m: m.conv2)])
def test_per_sample_targets_at_layer_equal_autograd(make, layer, module):
    """``targets=`` with ``attribute_to``: row ``i`` is the gradient of sample ``i``'s own
    node; with a skip connection around the layer each row's bypass sees its own sample."""
    model = make()
    x = data()
    res = ins.run_grad(ins.convert(model, input_dim=[2, 8, 8]), x, attribute_to=layer,
                       targets=NODES, times_input=True)
    out, a = run_hooked(model, module(model), x)
    grad = torch.autograd.grad(out[torch.arange(len(x)), NODES].sum(), a)[0]
    close(res.get_result("torch_tensor"), (grad * a.detach()).unsqueeze(-1))


def test_per_sample_targets_with_intgrad_at_a_bypassed_layer_equal_captum():
    model = Residual().double()
    x, x_ref = data().double(), data(1, seed=7).double()
    res = ins.run_intgrad(ins.convert(model, input_dim=[2, 8, 8]), x, x_ref=x_ref,
                          attribute_to="conv2", targets=NODES, n=16, dtype="double")
    lig = LayerIntegratedGradients(model, model.conv2)
    expected = lig.attribute(x, baselines=x_ref, target=NODES, n_steps=16,
                             method="riemann_right")
    close(res.get_result("torch_tensor"), expected.unsqueeze(-1), 1e-10)
    _, a_ref = run_hooked(model, model.conv2, x_ref)
    f_ref, _ = run_hooked(model, model.conv2, x, a_ref.expand(len(x), *a_ref.shape[1:]))
    rows = torch.arange(len(x))
    close(res.decomp_goal[0][:, 0], (model(x) - f_ref).detach()[rows, NODES], 1e-10)


@pytest.mark.parametrize("method", ["lrp", "deeplift"])
def test_rule_methods_at_layer_with_custom_targets_equal_single_outputs(method):
    """Per-sample targets give row ``i`` of the single-output result of sample ``i``'s
    node; ``target_weights`` of a logit difference the difference of two single-output
    results; the layer report's last layer passes on what arrives at the layer."""
    run = {"lrp": lambda **kw: ins.run_lrp(rule_name="epsilon", **kw),
           "deeplift": lambda **kw: ins.run_deeplift(x_ref=data(1, seed=7), **kw)}[method]
    x = data()
    conv = ins.convert(cnn(), input_dim=[2, 8, 8])

    def single(node: int) -> Tensor:
        return run(converter=conv, data=x, attribute_to="1", output_idx=[node]).get_result(
            "torch_tensor")[..., 0]

    per_sample = run(converter=conv, data=x, attribute_to="1", targets=NODES, keep_layers=True)
    expected = torch.stack([single(node)[i] for i, node in enumerate(NODES)])
    close(per_sample.get_result("torch_tensor")[..., 0], expected)
    report = per_sample.layer_report()
    into = report[report["layer"] == "2"].sort_values("data")["value_out"].to_numpy()
    close(torch.tensor(into, dtype=torch.float32), expected.flatten(1).sum(1))
    difference = run(converter=conv, data=x, attribute_to="1", target_weights=[1.0, 0.0, -1.0])
    close(difference.get_result("torch_tensor")[..., 0], single(0) - single(2))


def test_target_fun_at_layer_equals_autograd():
    model = cnn()
    x = data()
    res = ins.run_grad(ins.convert(model, input_dim=[2, 8, 8]), x, attribute_to="3",
                       target_fun=lambda outs: outs[0].logsumexp(1))
    out, a = run_hooked(model, model[3], x)
    close(res.get_result("torch_tensor"),
          torch.autograd.grad(out.logsumexp(1).sum(), a)[0].unsqueeze(-1))


def test_the_cut_model_feeds_each_row_its_own_samples_bypass():
    """Rows of the model cut at a bypassed layer take the skip connection of their data
    sample (the original model at those samples); rows without samples are refused."""
    model = Residual()
    x = data()
    res = ins.run_grad(ins.convert(model, input_dim=[2, 8, 8]), x, attribute_to="conv2",
                       output_idx=TARGETS)
    activations = res.setup.data[0]
    rows = torch.tensor([2, 0, 2, 1])
    close(res.setup.model_fn([activations[rows]], rows)[0], model(x[rows]).detach())
    with pytest.raises(ValueError, match="bypasses layer 'conv2', so the model cut there needs"):
        res.setup.model_fn([activations[:2]])


def test_a_layer_by_position_equals_the_layer_by_name():
    conv = ins.convert(cnn(), input_dim=[2, 8, 8])
    x = data()
    position = conv.model.layer_names.index("3")
    assert ins.run_grad(conv, x, attribute_to=position, output_idx=TARGETS) == ins.run_grad(
        conv, x, attribute_to="3", output_idx=TARGETS)


def test_bad_layers_are_refused_by_name():
    model = nn.Sequential(*cnn(), nn.Softmax(dim=1)).eval()
    conv = ins.convert(model, input_dim=[2, 8, 8])
    x = data()
    with pytest.raises(ValueError, match="`attribute_to` 'nope' is no layer of the model"):
        ins.run_grad(conv, x, attribute_to="nope")
    with pytest.raises(TypeError, match="`attribute_to` must be a layer name"):
        ins.run_grad(conv, x, attribute_to=3.0)
    with pytest.raises(ValueError, match="`attribute_to` 99 is no layer position"):
        ins.run_grad(conv, x, attribute_to=99)
    with pytest.raises(ValueError, match="`attribute_to` '7' .* does not lead to the explained"):
        ins.run_grad(conv, x, attribute_to="7")  # the softmax, after the explained logits
    with pytest.raises(ValueError, match="ConnectionWeights cannot attribute to a layer"):
        ins.run_cw(conv, x, attribute_to="1")
    with pytest.raises(ValueError, match="ExpectedGradient cannot attribute to layer 'conv2'"):
        ins.run_expgrad(ins.convert(Residual(), input_dim=[2, 8, 8]), x, attribute_to="conv2")
