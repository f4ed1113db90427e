"""Functional, method and module forms of every supported torch operation.

Each case is a small module whose forward uses one form; the converted model
must reproduce the original module's output in float32 and float64 (see
``check_conversion`` in ``tests/conftest.py``). Cases are grouped by family.
"""

from __future__ import annotations

import math

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import innsight as ins

IMAGE = [3, 5, 6]
SIGNAL = [4, 9]
TABULAR = [6]


def case(case_id: str, fn: Callable[..., Any], input_dim: Any, *,
         marks: Any = (), **attributes: Callable[[], Any]) -> Any:
    """One parametrized case: ``fn(self, x)`` (or ``fn(self, a, b)`` for two input
    shapes) with attributes made by the given zero-argument factories."""
    return pytest.param(fn, input_dim, attributes, id=case_id, marks=marks)


def run_case(module_from, assert_converts, fn, input_dim, attributes, tracer="auto"):
    torch.manual_seed(0)
    n_inputs = 2 if isinstance(input_dim[0], list) else 1
    model = module_from(fn, n_inputs=n_inputs, **{k: make() for k, make in attributes.items()})
    return assert_converts(model, input_dim, tracer=tracer)


def conv2d():
    return nn.Conv2d(3, 4, 3, padding=1)


def layer_norm(shape: Any, **kwargs: Any) -> nn.LayerNorm:
    """``nn.LayerNorm`` with random weight and bias (fresh ones are ones and zeros)."""
    norm = nn.LayerNorm(shape, **kwargs)
    with torch.no_grad():
        for param in norm.parameters():
            param.copy_(torch.randn_like(param))
    return norm


ACTIVATIONS = [
    case("F.relu", lambda m, x: F.relu(x), IMAGE),
    case("torch.relu", lambda m, x: torch.relu(x), IMAGE),
    case("x.relu()", lambda m, x: x.relu(), IMAGE),
    case("F.relu-inplace", lambda m, x: F.relu(m.conv(x), inplace=True), IMAGE, conv=conv2d),
    case("x.relu_()", lambda m, x: m.conv(x).relu_(), IMAGE, conv=conv2d),
    case("F.relu6", lambda m, x: F.relu6(3 * x), IMAGE),
    case("F.leaky_relu(x,0.2)", lambda m, x: F.leaky_relu(x, 0.2), IMAGE),
    case("F.leaky_relu-default", lambda m, x: F.leaky_relu(x), IMAGE),
    case("F.leaky_relu-kw", lambda m, x: F.leaky_relu(x, negative_slope=0.3), IMAGE),
    case("F.gelu", lambda m, x: F.gelu(x), IMAGE),
    case("F.gelu-tanh", lambda m, x: F.gelu(x, approximate="tanh"), IMAGE),
    case("F.silu", lambda m, x: F.silu(x), IMAGE),
    case("torch.sigmoid", lambda m, x: torch.sigmoid(x), IMAGE),
    case("x.sigmoid()", lambda m, x: x.sigmoid(), IMAGE),
    case("torch.tanh", lambda m, x: torch.tanh(x), IMAGE),
    case("x.tanh()", lambda m, x: x.tanh(), IMAGE),
    case("F.softplus", lambda m, x: F.softplus(x), IMAGE),
    case("F.softplus-beta-threshold", lambda m, x: F.softplus(3 * x, beta=2, threshold=1.5),
         IMAGE),
    case("F.elu", lambda m, x: F.elu(x), IMAGE),
    case("F.elu-alpha", lambda m, x: F.elu(x, alpha=0.4), IMAGE),
    case("F.hardswish", lambda m, x: F.hardswish(2 * x), IMAGE),
    case("F.hardsigmoid", lambda m, x: F.hardsigmoid(2 * x), IMAGE),
    case("torch.clamp(x,0,6)", lambda m, x: torch.clamp(4 * x, 0, 6), IMAGE),
    case("torch.clamp-min0", lambda m, x: torch.clamp(x, min=0), IMAGE),
    case("x.clamp(-1,2)", lambda m, x: x.clamp(-1, 2), IMAGE),
    case("F.selu", lambda m, x: F.selu(x), IMAGE),
    case("torch.selu", lambda m, x: torch.selu(x), IMAGE),
    case("F.celu-alpha", lambda m, x: F.celu(x, alpha=0.5), IMAGE),
    case("torch.celu", lambda m, x: torch.celu(x), IMAGE),
    case("F.mish", lambda m, x: F.mish(x), IMAGE),
    case("F.softsign", lambda m, x: F.softsign(x), IMAGE),
    case("F.logsigmoid", lambda m, x: F.logsigmoid(x), IMAGE),
    case("F.tanhshrink", lambda m, x: F.tanhshrink(x), IMAGE),
    case("torch.exp", lambda m, x: torch.exp(x), IMAGE),
    case("x.exp()", lambda m, x: x.exp(), IMAGE),
    case("x.exp_()", lambda m, x: m.conv(x).exp_(), IMAGE, conv=conv2d),
    case("F.softmax(x,dim=1)", lambda m, x: F.softmax(x, dim=1), IMAGE),
    case("F.softmax-dim-1", lambda m, x: F.softmax(x, dim=-1), IMAGE),
    case("torch.softmax", lambda m, x: torch.softmax(x, 2), IMAGE),
    case("x.softmax()", lambda m, x: x.softmax(dim=1), TABULAR),
    case("nn.ReLU6", lambda m, x: m.act(3 * x), IMAGE, act=nn.ReLU6),
    case("nn.Hardswish", lambda m, x: m.act(2 * x), IMAGE, act=nn.Hardswish),
    case("nn.Hardsigmoid", lambda m, x: m.act(2 * x), IMAGE, act=nn.Hardsigmoid),
    case("nn.LeakyReLU(0.2)", lambda m, x: m.act(x), IMAGE, act=lambda: nn.LeakyReLU(0.2)),
    case("nn.ELU(0.7)", lambda m, x: m.act(x), IMAGE, act=lambda: nn.ELU(0.7)),
    case("nn.GELU(tanh)", lambda m, x: m.act(x), IMAGE, act=lambda: nn.GELU("tanh")),
    case("nn.SiLU", lambda m, x: m.act(x), IMAGE, act=nn.SiLU),
    case("nn.Softplus(2,1)", lambda m, x: m.act(2 * x), IMAGE, act=lambda: nn.Softplus(2, 1)),
    case("nn.Hardtanh(-2,1)", lambda m, x: m.act(2 * x), IMAGE, act=lambda: nn.Hardtanh(-2, 1)),
    case("nn.SELU", lambda m, x: m.act(x), IMAGE, act=nn.SELU),
    case("nn.CELU(0.6)", lambda m, x: m.act(x), IMAGE, act=lambda: nn.CELU(0.6)),
    case("nn.Mish", lambda m, x: m.act(x), IMAGE, act=nn.Mish),
    case("nn.Softsign", lambda m, x: m.act(x), IMAGE, act=nn.Softsign),
    case("nn.LogSigmoid", lambda m, x: m.act(x), IMAGE, act=nn.LogSigmoid),
    case("nn.Tanhshrink", lambda m, x: m.act(x), IMAGE, act=nn.Tanhshrink),
    case("nn.Softmax2d", lambda m, x: m.act(x), IMAGE, act=nn.Softmax2d),
    case("nn.Softmax(-2)", lambda m, x: m.act(x), IMAGE, act=lambda: nn.Softmax(-2)),
]


def channel_shuffle(m, x):
    b, c, h, w = x.size()
    return x.view(b, 2, c // 2, h, w).transpose(1, 2).contiguous().view(b, -1, h, w)


def glu(m, x):
    a, b = torch.chunk(x, 2, dim=1)
    return a * torch.sigmoid(b)


def split_sizes(m, x):
    a, b = torch.split(x, [1, 3], dim=1)
    return torch.cat([b, F.relu(a)], dim=1)


def chunk_three(m, x):
    a, b, c = x.chunk(3, dim=-1)
    return a + b - 2 * c


def split_even(m, x):
    pieces = x.split(2, dim=2)
    return pieces[1] - pieces[0]


SHAPES = [
    case("torch.flatten(x,1)", lambda m, x: torch.flatten(x, 1), IMAGE),
    case("x.view(x.size(0),-1)", lambda m, x: x.view(x.size(0), -1), IMAGE),
    case("x.view(-1,...)", lambda m, x: x.view(-1, 5, 18), IMAGE),
    case("x.reshape", lambda m, x: x.reshape(x.size(0), 6, -1), IMAGE),
    case("torch.reshape", lambda m, x: torch.reshape(x, (-1, 10, 9)), IMAGE),
    case("x.flatten(1)", lambda m, x: x.flatten(1), IMAGE),
    case("x.flatten(2)", lambda m, x: x.flatten(2), IMAGE),
    case("flatten-then-linear", lambda m, x: m.fc(x.flatten(1)), IMAGE,
         fc=lambda: nn.Linear(90, 4)),
    case("nn.Unflatten", lambda m, x: m.unflatten(x), TABULAR, unflatten=lambda: nn.Unflatten(1, (2, 3))),
    case("x.permute(0,2,3,1)", lambda m, x: x.permute(0, 2, 3, 1), IMAGE),
    case("torch.permute", lambda m, x: torch.permute(x, (0, 3, 1, 2)), IMAGE),
    case("permute-then-linear", lambda m, x: m.fc(x.permute(0, 2, 3, 1)).flatten(1), IMAGE,
         fc=lambda: nn.Linear(3, 2)),
    case("x.transpose(1,2)", lambda m, x: x.transpose(1, 2), IMAGE),
    case("torch.transpose(-1,-2)", lambda m, x: torch.transpose(x, -1, -2), SIGNAL),
    case("torch.chunk(x,2,dim=1)", glu, [4, 3, 5]),
    case("x.chunk(3,dim=-1)", chunk_three, [2, 6]),
    case("torch.split(x,[1,3],dim=1)", split_sizes, [4, 5]),
    case("x.split(2,dim=2)", split_even, [3, 4, 5]),
    case("x[:,1:3]", lambda m, x: x[:, 1:3], IMAGE),
    case("x[:,0]", lambda m, x: x[:, 0], IMAGE),
    case("x[:,-1]", lambda m, x: x[:, -1], SIGNAL),
    case("x[...,::2]", lambda m, x: x[..., ::2], IMAGE),
    case("x[:,1:,::2,2]", lambda m, x: x[:, 1:, ::2, 2], IMAGE),
    case("x[:,None]", lambda m, x: x[:, None], SIGNAL),
    case("x.unsqueeze(1)", lambda m, x: x.unsqueeze(1), SIGNAL),
    case("torch.unsqueeze(x,-1)", lambda m, x: torch.unsqueeze(x, -1), TABULAR),
    case("x.squeeze(1)", lambda m, x: x.mean(dim=1, keepdim=True).squeeze(1), IMAGE),
    case("channel-shuffle", channel_shuffle, [4, 3, 3]),
    case("x.contiguous()", lambda m, x: x.transpose(1, 2).contiguous(), IMAGE),
]


def se_gate(m, x):
    s = F.adaptive_avg_pool2d(x, 1).flatten(1)
    s = torch.sigmoid(m.fc2(F.relu(m.fc1(s))))
    return x * s.view(s.size(0), -1, 1, 1)


ARITHMETIC = [
    case("torch.cat([a,b],dim=1)", lambda m, a, b: torch.cat([a, b], dim=1), [[3], [4]]),
    case("torch.cat-images", lambda m, a, b: torch.cat([a, b], dim=1), [[2, 4, 5], [3, 4, 5]]),
    case("torch.cat-width", lambda m, a, b: torch.cat((a, b), -1), [[2, 4, 5], [2, 4, 3]]),
    case("torch.cat-one-input", lambda m, x: torch.cat([m.c1(x), x, m.c2(x)], 1), IMAGE,
         c1=conv2d, c2=lambda: nn.Conv2d(3, 2, 1)),
    case("torch.concat", lambda m, a, b: torch.concat([b, a], dim=1), [[3], [4]]),
    case("a+b", lambda m, a, b: a + b, [IMAGE, IMAGE]),
    case("torch.add(a,b)", lambda m, a, b: torch.add(a, b), [IMAGE, IMAGE]),
    case("a.add(b)", lambda m, a, b: a.add(b), [TABULAR, TABULAR]),
    case("a-b", lambda m, a, b: a - b, [IMAGE, IMAGE]),
    case("torch.sub(a,b)", lambda m, a, b: torch.sub(a, b), [TABULAR, TABULAR]),
    case("a*b", lambda m, a, b: a * b, [IMAGE, IMAGE]),
    case("x*x", lambda m, x: x * x, TABULAR),
    case("x+x", lambda m, x: x + x, TABULAR),
    case("x*0.5", lambda m, x: x * 0.5, IMAGE),
    case("0.5*x", lambda m, x: 0.5 * x, IMAGE),
    case("torch.mul(x,2)", lambda m, x: torch.mul(x, 2), IMAGE),
    case("x/6", lambda m, x: x / 6, IMAGE),
    case("torch.div(x,3)", lambda m, x: torch.div(x, 3), IMAGE),
    case("x+3", lambda m, x: x + 3, IMAGE),
    case("3+x", lambda m, x: 3 + x, IMAGE),
    case("x-3", lambda m, x: x - 3, IMAGE),
    case("3-x", lambda m, x: 3 - x, IMAGE),
    case("-x", lambda m, x: -x, IMAGE),
    case("torch.neg", lambda m, x: torch.neg(x), IMAGE),
    case("x*self.gamma", lambda m, x: x * m.gamma, IMAGE,
         gamma=lambda: nn.Parameter(torch.randn(3, 1, 1))),
    case("self.gamma*x", lambda m, x: m.gamma * x, IMAGE,
         gamma=lambda: nn.Parameter(torch.randn(3, 1, 1))),
    case("x+self.beta", lambda m, x: x + m.beta, IMAGE,
         beta=lambda: nn.Parameter(torch.randn(3, 1, 1))),
    case("x-self.beta", lambda m, x: x - m.beta, IMAGE,
         beta=lambda: nn.Parameter(torch.randn(3, 5, 6))),
    case("x/self.scale", lambda m, x: x / m.scale, IMAGE,
         scale=lambda: nn.Parameter(1 + torch.rand(3, 1, 1))),
    case("a*b-SE-gate", se_gate, [4, 5, 6],
         fc1=lambda: nn.Linear(4, 2), fc2=lambda: nn.Linear(2, 4)),
    case("x*sigmoid(mean)", lambda m, x: x * torch.sigmoid(x.mean((2, 3), keepdim=True)),
         IMAGE),
    case("hardswish-by-hand", lambda m, x: x * F.relu6(x + 3) / 6, IMAGE),
    case("residual-add", lambda m, x: F.relu(m.conv(x)) + x, IMAGE,
         conv=lambda: nn.Conv2d(3, 3, 3, padding=1)),
]

POOLING = [
    case("F.adaptive_avg_pool2d(x,1)", lambda m, x: F.adaptive_avg_pool2d(x, 1), [3, 7, 7]),
    case("F.adaptive_avg_pool2d(x,(2,3))", lambda m, x: F.adaptive_avg_pool2d(x, (2, 3)),
         [3, 7, 7]),
    case("F.adaptive_max_pool2d", lambda m, x: F.adaptive_max_pool2d(x, 2), [3, 7, 7]),
    case("F.adaptive_avg_pool1d", lambda m, x: F.adaptive_avg_pool1d(x, 4), SIGNAL),
    case("nn.AdaptiveAvgPool2d((None,2))", lambda m, x: m.pool(x), [3, 7, 7],
         pool=lambda: nn.AdaptiveAvgPool2d((None, 2))),
    case("nn.AdaptiveMaxPool1d", lambda m, x: m.pool(x), SIGNAL,
         pool=lambda: nn.AdaptiveMaxPool1d(3)),
    case("F.avg_pool2d", lambda m, x: F.avg_pool2d(x, 2), [3, 7, 7]),
    case("F.avg_pool2d-pad", lambda m, x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False),
         [3, 7, 7]),
    case("F.avg_pool2d-ceil", lambda m, x: F.avg_pool2d(x, 2, ceil_mode=True), [3, 7, 7]),
    case("nn.AvgPool2d-ceil-pad", lambda m, x: m.pool(x), [3, 7, 7],
         pool=lambda: nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True)),
    case("F.max_pool2d(x,3,2,1,ceil_mode=True)",
         lambda m, x: F.max_pool2d(x, 3, 2, 1, ceil_mode=True), [3, 8, 8]),
    case("F.max_pool2d-dilation", lambda m, x: F.max_pool2d(x, kernel_size=2, stride=1,
                                                            dilation=2), [3, 7, 7]),
    case("F.max_pool1d", lambda m, x: F.max_pool1d(x, 3, stride=2), SIGNAL),
    case("F.avg_pool1d", lambda m, x: F.avg_pool1d(x, 2), SIGNAL),
    case("nn.MaxPool3d", lambda m, x: m.pool(x), [2, 4, 4, 5], pool=lambda: nn.MaxPool3d(2)),
    case("F.avg_pool3d", lambda m, x: F.avg_pool3d(x, 2), [2, 4, 4, 5]),
    case("x.mean((2,3))", lambda m, x: x.mean((2, 3)), IMAGE),
    case("x.mean(dim=1,keepdim=True)", lambda m, x: x.mean(dim=1, keepdim=True), IMAGE),
    case("torch.mean(x,-1)", lambda m, x: torch.mean(x, -1), SIGNAL),
]

PADDING = [
    case("F.pad-constant", lambda m, x: F.pad(x, (1, 2, 0, 3)), [2, 5, 6]),
    case("F.pad-constant-value", lambda m, x: F.pad(x, (1, 2, 0, 3), value=0.5), [2, 5, 6]),
    case("F.pad-reflect", lambda m, x: F.pad(x, (1, 2, 2, 0), mode="reflect"), [2, 5, 6]),
    case("F.pad-replicate", lambda m, x: F.pad(x, (0, 3, 1, 2), mode="replicate"), [2, 5, 6]),
    case("F.pad-circular", lambda m, x: F.pad(x, (2, 1, 1, 0), mode="circular"), [2, 5, 6]),
    case("F.pad-last-axis-only", lambda m, x: F.pad(x, (0, 2), "constant", -1.0), [2, 5, 6]),
    case("F.pad-1d-reflect", lambda m, x: F.pad(x, (3, 1), "reflect"), SIGNAL),
    case("F.pad-1d-circular", lambda m, x: F.pad(x, (1, 2), "circular"), SIGNAL),
    case("nn.ZeroPad2d", lambda m, x: m.pad(x), [2, 5, 6], pad=lambda: nn.ZeroPad2d((1, 0, 2, 1))),
    case("nn.ConstantPad2d", lambda m, x: m.pad(x), [2, 5, 6],
         pad=lambda: nn.ConstantPad2d(1, 0.25)),
    case("nn.ReflectionPad1d", lambda m, x: m.pad(x), SIGNAL,
         pad=lambda: nn.ReflectionPad1d((2, 1))),
    case("nn.ReplicationPad2d", lambda m, x: m.pad(x), [2, 5, 6],
         pad=lambda: nn.ReplicationPad2d((1, 2, 0, 1))),
]

CONVOLUTION = [
    case("Conv2d-same-even-dilated", lambda m, x: m.conv(x), [3, 7, 8],
         conv=lambda: nn.Conv2d(3, 4, 4, padding="same", dilation=2)),
    case("Conv2d-same-even", lambda m, x: m.conv(x), [3, 7, 8],
         conv=lambda: nn.Conv2d(3, 4, (2, 3), padding="same"),
         # torch's own note that its kernel pads a copy of the input
         marks=pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")),
    case("Conv2d-valid-stride", lambda m, x: m.conv(x), [3, 7, 8],
         conv=lambda: nn.Conv2d(3, 4, 3, stride=2, padding="valid")),
    case("Conv2d-asymmetric-stride", lambda m, x: m.conv(x), [3, 7, 8],
         conv=lambda: nn.Conv2d(3, 2, (3, 1), stride=(2, 1), padding=(0, 2), bias=False)),
    case("Conv2d-reflect", lambda m, x: m.conv(x), [3, 7, 8],
         conv=lambda: nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")),
    case("Conv2d-replicate", lambda m, x: m.conv(x), [3, 7, 8],
         conv=lambda: nn.Conv2d(3, 4, 3, padding=(2, 1), padding_mode="replicate")),
    case("Conv2d-circular", lambda m, x: m.conv(x), [3, 7, 8],
         conv=lambda: nn.Conv2d(3, 4, 3, padding=(1, 2), padding_mode="circular")),
    case("Conv2d-depthwise", lambda m, x: m.conv(x), [4, 6, 6],
         conv=lambda: nn.Conv2d(4, 8, 3, groups=4, padding=1)),
    case("Conv1d-groups", lambda m, x: m.conv(x), SIGNAL,
         conv=lambda: nn.Conv1d(4, 6, 3, groups=2)),
    case("Conv1d-same-dilated", lambda m, x: m.conv(x), SIGNAL,
         conv=lambda: nn.Conv1d(4, 3, 4, padding="same", dilation=3)),
    case("Conv3d", lambda m, x: m.conv(x), [2, 4, 6, 6],
         conv=lambda: nn.Conv3d(2, 3, 3, padding=1, stride=(1, 2, 2))),
    case("BatchNorm1d-tabular", lambda m, x: m.bn(x), [5], bn=lambda: nn.BatchNorm1d(5)),
    case("BatchNorm1d-signal", lambda m, x: m.bn(x), SIGNAL, bn=lambda: nn.BatchNorm1d(4)),
    case("BatchNorm2d-no-affine", lambda m, x: m.bn(x), IMAGE,
         bn=lambda: nn.BatchNorm2d(3, affine=False)),
    case("BatchNorm3d", lambda m, x: m.bn(x), [2, 3, 4, 4], bn=lambda: nn.BatchNorm3d(2)),
    case("nn.LayerNorm-signal", lambda m, x: m.norm(x), SIGNAL, norm=lambda: layer_norm(9)),
    case("nn.LayerNorm-two-axes", lambda m, x: m.norm(x), IMAGE,
         norm=lambda: layer_norm([5, 6], eps=1e-3)),
    case("nn.LayerNorm-no-affine", lambda m, x: m.norm(x), TABULAR,
         norm=lambda: nn.LayerNorm(6, elementwise_affine=False)),
    case("nn.LayerNorm-no-bias", lambda m, x: m.norm(m.fc(x)), TABULAR,
         fc=lambda: nn.Linear(6, 4), norm=lambda: layer_norm(4, bias=False)),
    case("F.layer_norm-channels-last", lambda m, x: F.layer_norm(
        x.permute(0, 2, 3, 1), (3,), m.w, m.b, 1e-6).permute(0, 3, 1, 2), IMAGE,
         w=lambda: nn.Parameter(torch.randn(3)), b=lambda: nn.Parameter(torch.randn(3))),
    case("F.layer_norm-no-weight", lambda m, x: F.layer_norm(x, [9]), SIGNAL),
    case("torch.layer_norm", lambda m, x: torch.layer_norm(x, [4, 9], m.w, None, 0.1), SIGNAL,
         w=lambda: nn.Parameter(torch.randn(4, 9))),
    case("F.linear", lambda m, x: F.linear(x, m.w, m.b), TABULAR,
         w=lambda: nn.Parameter(torch.randn(3, 6)), b=lambda: nn.Parameter(torch.randn(3))),
    case("F.linear-no-bias", lambda m, x: F.linear(x, m.w), TABULAR,
         w=lambda: nn.Parameter(torch.randn(3, 6))),
    case("F.conv2d", lambda m, x: F.conv2d(x, m.w, m.b, 2, 1), [3, 7, 8],
         w=lambda: nn.Parameter(torch.randn(4, 3, 3, 3)), b=lambda: nn.Parameter(torch.randn(4))),
    case("F.conv2d-kw-groups-dilation", lambda m, x: F.conv2d(
        x, m.w, stride=(1, 2), padding=(2, 1), dilation=(2, 1), groups=2), [4, 7, 8],
         w=lambda: nn.Parameter(torch.randn(6, 2, 3, 3))),
    case("F.conv2d-same", lambda m, x: F.conv2d(x, m.w, padding="same", dilation=2), [3, 7, 8],
         w=lambda: nn.Parameter(torch.randn(2, 3, 3, 3))),
    case("torch.conv1d-valid", lambda m, x: torch.conv1d(x, m.w, m.b, padding="valid"), SIGNAL,
         w=lambda: nn.Parameter(torch.randn(3, 4, 2)), b=lambda: nn.Parameter(torch.randn(3))),
    case("F.conv3d", lambda m, x: F.conv3d(x, m.w, None, 1, (0, 1, 1)), [2, 4, 6, 6],
         w=lambda: nn.Parameter(torch.randn(3, 2, 2, 3, 3))),
    case("F.batch_norm", lambda m, x: F.batch_norm(x, m.bn.running_mean, m.bn.running_var,
                                                   m.bn.weight, m.bn.bias, False, 0.1, 1e-3),
         IMAGE, bn=lambda: nn.BatchNorm2d(3)),
    case("F.batch_norm-no-affine-kw", lambda m, x: F.batch_norm(
        x, m.bn.running_mean, m.bn.running_var, training=m.training, eps=m.bn.eps), SIGNAL,
         bn=lambda: nn.BatchNorm1d(4)),
    case("torch.batch_norm", lambda m, x: torch.batch_norm(
        x, m.bn.weight, m.bn.bias, m.bn.running_mean, m.bn.running_var, False, 0.1, 1e-4, False),
         IMAGE, bn=lambda: nn.BatchNorm2d(3)),
    case("BatchNorm2d-subclass-calling-F.batch_norm", lambda m, x: m.bn(x), IMAGE,
         bn=lambda: ActBatchNorm(3)),
]


def affine_group_norm(groups: int, channels: int) -> nn.GroupNorm:
    """``nn.GroupNorm`` with random weight and bias."""
    norm = nn.GroupNorm(groups, channels, eps=1e-3)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(channels))
        norm.bias.copy_(torch.randn(channels))
    return norm


def instance_norm_with_statistics() -> nn.InstanceNorm2d:
    norm = nn.InstanceNorm2d(3, affine=True, track_running_stats=True).eval()
    with torch.no_grad():
        norm.running_mean.copy_(torch.randn(3))
        norm.running_var.copy_(torch.rand(3) + 0.5)
    return norm


#: Decoders and segmentation heads: transposed convolutions, interpolation, group norm.
DENSE_PREDICTION = [
    case("ConvTranspose2d-stride2", lambda m, x: m.up(x), [3, 4, 5],
         up=lambda: nn.ConvTranspose2d(3, 2, 2, stride=2)),
    case("ConvTranspose2d-pad-outpad-groups", lambda m, x: m.up(x), [4, 4, 5],
         up=lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2)),
    case("ConvTranspose1d-dilation-no-bias", lambda m, x: m.up(x), SIGNAL,
         up=lambda: nn.ConvTranspose1d(4, 3, 3, dilation=2, bias=False)),
    case("ConvTranspose3d", lambda m, x: m.up(x), [2, 3, 3, 2],
         up=lambda: nn.ConvTranspose3d(2, 2, 2, stride=2)),
    case("ConvTranspose2d-output_size", lambda m, x: m.up(x, output_size=[8, 10]), [3, 4, 5],
         up=lambda: nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1)),
    case("F.conv_transpose2d", lambda m, x: F.conv_transpose2d(x, m.w, m.b, 2, 1, 1), [3, 4, 5],
         w=lambda: nn.Parameter(torch.randn(3, 2, 3, 3)), b=lambda: nn.Parameter(torch.randn(2))),
    case("nn.Upsample-nearest-x2", lambda m, x: m.up(x), [3, 4, 5],
         up=lambda: nn.Upsample(scale_factor=2)),
    case("nn.Upsample-bilinear-size", lambda m, x: m.up(x), [3, 4, 5],
         up=lambda: nn.Upsample(size=(7, 9), mode="bilinear")),
    case("nn.UpsamplingBilinear2d", lambda m, x: m.up(x), [3, 4, 5],
         up=lambda: nn.UpsamplingBilinear2d(scale_factor=2)),
    case("F.interpolate-bilinear-x1.5", lambda m, x: F.interpolate(
        x, scale_factor=1.5, mode="bilinear", align_corners=False), [3, 4, 6]),
    case("F.interpolate-size-of-other", lambda m, x: F.interpolate(
        m.pool(x), size=x.shape[-2:], mode="bilinear", align_corners=False) + x, [3, 6, 8],
         pool=lambda: nn.AvgPool2d(2)),
    case("F.interpolate-nearest-exact-1d", lambda m, x: F.interpolate(
        x, size=13, mode="nearest-exact"), SIGNAL),
    case("F.interpolate-trilinear", lambda m, x: F.interpolate(
        x, scale_factor=(1, 2, 2), mode="trilinear", align_corners=True), [2, 3, 3, 2]),
    case("F.interpolate-area", lambda m, x: F.interpolate(x, size=(2, 3), mode="area"),
         [3, 4, 6]),
    case("nn.GroupNorm", lambda m, x: m.norm(x), [4, 3, 5], norm=lambda: affine_group_norm(2, 4)),
    case("nn.GroupNorm-no-affine", lambda m, x: m.norm(x), SIGNAL,
         norm=lambda: nn.GroupNorm(4, 4, affine=False)),
    case("F.group_norm", lambda m, x: F.group_norm(x, 3, m.w, None, 1e-4), [6, 3, 3],
         w=lambda: nn.Parameter(torch.randn(6))),
    case("nn.InstanceNorm2d", lambda m, x: m.norm(x), IMAGE,
         norm=lambda: nn.InstanceNorm2d(3, affine=True)),
    case("nn.InstanceNorm1d-no-affine", lambda m, x: m.norm(x), SIGNAL,
         norm=lambda: nn.InstanceNorm1d(4)),
    case("nn.InstanceNorm2d-running-stats", lambda m, x: m.norm(x), IMAGE,
         norm=instance_norm_with_statistics),
]


class ActBatchNorm(nn.BatchNorm2d):
    """timm's ``BatchNormAct2d`` pattern: a batch-norm subclass that calls ``F.batch_norm``
    itself and applies an activation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                           self.training, self.momentum or 0.0, self.eps)
        return F.relu(out)


def token() -> nn.Parameter:
    """A class token: one token of width 4, with the batch axis of size 1."""
    return nn.Parameter(torch.randn(1, 1, 4))


def left_padded() -> torch.Tensor:
    """Which of 5 keys each of 5 queries attends to: causal, the first key masked too
    (left padding), so that the first query attends to no key."""
    return torch.ones(5, 5, dtype=torch.bool).tril() & (torch.arange(5) > 0)


def left_padded_additive() -> nn.Parameter:
    """:func:`left_padded` as an additive mask of finite numbers (0 and the float32
    minimum): the query attending to no key takes the softmax of its shifted scores."""
    additive = torch.zeros(5, 5).masked_fill(~left_padded(), torch.finfo(torch.float32).min)
    return nn.Parameter(additive, requires_grad=False)


ATTENTION = [
    case("nn.MultiheadAttention", lambda m, x: m.mha(x, x, x, need_weights=False)[0], [5, 8],
         mha=lambda: nn.MultiheadAttention(8, 2, batch_first=True)),
    case("nn.MultiheadAttention-positional", lambda m, x: m.mha(x, x, x, None, False)[0],
         [5, 8], mha=lambda: nn.MultiheadAttention(8, 4, batch_first=True)),
    case("nn.MultiheadAttention-cross-kdim", lambda m, a, b: m.mha(a, b, b)[0], [[4, 8], [6, 5]],
         mha=lambda: nn.MultiheadAttention(8, 2, kdim=5, vdim=5, bias=False, batch_first=True)),
    case("F.scaled_dot_product_attention",
         lambda m, x: F.scaled_dot_product_attention(x, m.k(x), m.v(x)), [2, 5, 4],
         k=lambda: nn.Linear(4, 4), v=lambda: nn.Linear(4, 3)),
    case("F.scaled_dot_product_attention-bool-mask-query-attending-no-key",
         lambda m, x: F.scaled_dot_product_attention(x, x, x, attn_mask=m.mask), [5, 4],
         mask=left_padded),
    case("F.scaled_dot_product_attention-float-mask-query-attending-no-key",
         lambda m, x: F.scaled_dot_product_attention(x, x, x, attn_mask=m.mask), [5, 4],
         mask=left_padded_additive),
    case("F.scaled_dot_product_attention-scale",
         lambda m, a, b: F.scaled_dot_product_attention(a, b, b, scale=0.3), [[5, 4], [3, 4]]),
    case("a@b", lambda m, a, b: a @ b, [[2, 3, 4], [2, 4, 5]]),
    case("torch.matmul-broadcast", lambda m, a, b: torch.matmul(a, b), [[1, 3, 4], [2, 4, 5]]),
    case("torch.bmm", lambda m, a, b: torch.bmm(a, b), [[3, 4], [4, 2]]),
    case("x.matmul(x.mT)", lambda m, x: x.matmul(x.transpose(1, 2)), [3, 4]),
    case("cat-class-token", lambda m, x: torch.cat([m.t.expand(x.shape[0], -1, -1), x], 1),
         [3, 4], t=token),
    case("cat-token-last-and-between",
         lambda m, x: torch.cat([x, m.t.expand(x.size(0), -1, -1), 2 * x,
                                 m.t.expand(x.size(0), 2, -1)], 1), [3, 4], t=token),
    case("x+token.expand", lambda m, x: x + m.t.expand(x.shape[0], 3, -1), [3, 4], t=token),
]


#: Primitive operations that models combine into norms and normalisers (RMS norm,
#: F.normalize), reductions, stacking and cropping; single input, so that the Gradient
#: and DeepLift are checked on each too.
PRIMITIVES = [
    case("x**2", lambda m, x: x ** 2, IMAGE),
    case("torch.square", lambda m, x: torch.square(x), TABULAR),
    case("F.rms_norm", lambda m, x: F.rms_norm(x, [9], m.w, 1e-6), SIGNAL,
         w=lambda: nn.Parameter(torch.randn(9))),
    case("nn.RMSNorm", lambda m, x: m.norm(x), SIGNAL, norm=lambda: nn.RMSNorm([4, 9], 1e-5)),

    case("x.pow(3)", lambda m, x: x.pow(3), TABULAR),
    case("torch.sqrt", lambda m, x: torch.sqrt(x * x + 1), TABULAR),
    case("torch.rsqrt", lambda m, x: torch.rsqrt(x * x + 1), TABULAR),
    case("x.abs()", lambda m, x: x.abs(), IMAGE),
    case("rms-norm", lambda m, x: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6),
         SIGNAL),
    case("a/b-tensors", lambda m, x: x / (x.abs() + 1), IMAGE),
    case("F.normalize", lambda m, x: F.normalize(x, dim=1), IMAGE),
    case("torch.linalg.vector_norm", lambda m, x: torch.linalg.vector_norm(x, dim=-1), SIGNAL),
    case("x.sum(dims)", lambda m, x: x.sum((2, 3)), IMAGE),
    case("torch.sum(keepdim)", lambda m, x: torch.sum(x, 1, keepdim=True) - x, SIGNAL),
    case("torch.stack", lambda m, x: torch.stack([x, 2 * x, -x], 2).flatten(1), SIGNAL),
    case("x@W", lambda m, x: x @ m.w, SIGNAL, w=lambda: nn.Parameter(torch.randn(9, 5))),
    case("F.pad-crop", lambda m, x: F.pad(x, (-1, 2, 1, -2)), IMAGE),
    case("clamp(min)", lambda m, x: x.clamp(min=0.2), IMAGE),
    case("clamp(max)", lambda m, x: torch.clamp(x, max=-0.1), IMAGE),
    case("x.clamp_min", lambda m, x: x.clamp_min(0.3), TABULAR),
    case("clamp(tensor bounds)", lambda m, x: torch.clamp(x, m.low, m.low + 1), SIGNAL,
         low=lambda: nn.Parameter(torch.randn(9))),
    case("clamp(infinite bounds)",
         lambda m, x: torch.clamp(x, m.low - math.inf, m.low + 2), SIGNAL,
         low=lambda: nn.Parameter(torch.randn(9))),
    case("expand-computed", lambda m, x: x[:, :1].expand(-1, 4, -1) * x, SIGNAL),
    case("expand_as-computed", lambda m, x: x.mean(1, keepdim=True).expand_as(x) + x, SIGNAL),
    case("F.unfold", lambda m, x: F.unfold(x, 3, padding=1, stride=2), IMAGE),
    case("nn.Unfold-dilated", lambda m, x: m.unfold(x), IMAGE,
         unfold=lambda: nn.Unfold((2, 3), dilation=(2, 1))),
    case("F.fold", lambda m, x: F.fold(F.unfold(x, 2, stride=1) * 0.5, (5, 6), 2), IMAGE),
    case("nn.Fold-strided", lambda m, x: m.fold(torch.cat([x.flatten(2)[:, :, :6]] * 4, 1)),
         IMAGE, fold=lambda: nn.Fold((5, 6), 2, stride=2)),
    case("x.unfold", lambda m, x: x.unfold(2, 3, 2), IMAGE),
    case("x.amax(dims)", lambda m, x: x.amax((1, 3)), IMAGE),
    case("torch.amax(keepdim)", lambda m, x: x - torch.amax(x, -1, keepdim=True), SIGNAL),
    case("x.max(dim).values", lambda m, x: x.max(2).values, IMAGE),
    case("torch.max(dim)[0]", lambda m, x: torch.max(x, dim=1, keepdim=True)[0] * x, SIGNAL),
    case("x[:, constant index]", lambda m, x: x[:, :, m.order], IMAGE,
         order=lambda: nn.Buffer(torch.tensor([4, 0, 0, 2, -1]))),
    case("x[..., constant index last]", lambda m, x: x[:, :, :, m.order], IMAGE,
         order=lambda: nn.Buffer(torch.tensor([5, 1, 3]))),
    case("einsum-permutation", lambda m, x: torch.einsum("bcl->blc", x), SIGNAL),
    case("einsum-by-constant", lambda m, x: torch.einsum("bcl,lk->bck", x, m.w), SIGNAL,
         w=lambda: nn.Parameter(torch.randn(9, 5))),
    case("einsum-by-constant-shared-letter",
         lambda m, x: torch.einsum("bcl,lkc->bkl", x, m.w), SIGNAL,
         w=lambda: nn.Parameter(torch.randn(9, 5, 4))),
    case("einsum-by-constant-summed-apart",
         lambda m, x: torch.einsum("bcl,cz->bl", x, m.w), SIGNAL,
         w=lambda: nn.Parameter(torch.randn(4, 3))),
    case("einsum-by-vector", lambda m, x: torch.einsum("bcl,l->bl", x, m.w), SIGNAL,
         w=lambda: nn.Parameter(torch.randn(9))),
    case("einsum-two-tensors", lambda m, x: torch.einsum("bcl,bdl->bcd", x, x.tanh()), SIGNAL),
    case("einsum-batched-product-list",
         lambda m, x: torch.einsum("bchw,bcwk->bkch", [x, x.transpose(2, 3).tanh()]), IMAGE),
    case("torch.addcmul-constants", lambda m, x: torch.addcmul(m.b, m.w, x, value=0.5), IMAGE,
         w=lambda: nn.Parameter(torch.randn(6)), b=lambda: nn.Parameter(torch.randn(6))),
    case("x.addcmul-tensors", lambda m, x: x.addcmul(x.tanh(), x, value=-2), SIGNAL),
    case("addcmul-tensor-by-constant", lambda m, x: torch.addcmul(x, x.tanh(), m.w), SIGNAL,
         w=lambda: nn.Parameter(torch.randn(4, 1))),
    case("x.repeat", lambda m, x: x.repeat(1, 2, 3), SIGNAL),
    case("x.repeat-images", lambda m, x: x.repeat(1, 1, 2, 1) * x.repeat(1, 1, 1, 1).tanh()
         .repeat(1, 1, 2, 1), IMAGE),
    case("x.repeat_interleave", lambda m, x: x.repeat_interleave(2, dim=2), SIGNAL),
    case("torch.repeat_interleave", lambda m, x: torch.repeat_interleave(x, 3, 1), IMAGE),
    case("cat-empty-slice", lambda m, x: torch.cat([x[:, :, :0], x[:, :, 1:].tanh()], 2), SIGNAL),
]

FORMS = [*ATTENTION, *ACTIVATIONS, *SHAPES, *ARITHMETIC, *POOLING, *PADDING, *CONVOLUTION,
         *DENSE_PREDICTION, *PRIMITIVES]

_EXPORTED_ATTENTION = ("torch.export writes nn.MultiheadAttention out in ATen operations that "
                       "merge the tokens into the batch axis with the batch as the minor index "
                       "(view(L * B, E)), which mixes samples' entries in a way the converter "
                       "does not follow; torch.fx keeps the module whole")
#: Forms that torch.export traces into ATen operations without a conversion yet, and why.
EXPORT_GAPS = {
    "F.adaptive_max_pool2d": "aten.adaptive_max_pool2d returns (values, indices)",
    "nn.AdaptiveMaxPool1d": "aten.adaptive_max_pool1d returns (values, indices)",
    "nn.MultiheadAttention": _EXPORTED_ATTENTION,
    "nn.MultiheadAttention-positional": _EXPORTED_ATTENTION,
    "nn.MultiheadAttention-cross-kdim": _EXPORTED_ATTENTION,
}


def with_tracers(cases: list[Any]) -> list[Any]:
    """Every case traced by torch.fx and by torch.export (strict xfail for the gaps)."""
    params = []
    for p in cases:
        for tracer in ("fx", "export"):
            gap = EXPORT_GAPS.get(p.id) if tracer == "export" else None
            marks = [*p.marks, *([pytest.mark.xfail(reason=gap, raises=ins.ConversionError,
                                                    strict=True)] if gap else [])]
            params.append(pytest.param(*p.values, tracer, id=f"{p.id}-{tracer}", marks=marks))
    return params


@pytest.mark.parametrize(("fn", "input_dim", "attributes", "tracer"), with_tracers(FORMS))
def test_operation_form(module_from, assert_converts, fn, input_dim, attributes, tracer):
    run_case(module_from, assert_converts, fn, input_dim, attributes, tracer)


@pytest.mark.parametrize(("fn", "input_dim", "attributes", "tracer"), with_tracers(PRIMITIVES))
def test_primitive_is_explained_exactly(module_from, explained_exactly, fn, input_dim,
                                        attributes, tracer):
    """Gradient against autograd and DeepLift's sum on the original (float64)."""
    torch.manual_seed(0)
    flat = module_from(lambda m, x: fn(m, x).flatten(1), **{k: make() for k, make in
                                                           attributes.items()})
    explained_exactly(flat, input_dim, tracer=tracer)


@pytest.mark.parametrize(("equation", "message"), [
    ("bcl,bdl", "batch axis must be the first letter"), ("b...l->bl", "ellipses"),
    ("bcc->bc", "diagonal"), ("bcl,bdl->bl", "summed within one operand"),
])
def test_unsupported_einsum_is_refused_by_name(module_from, equation, message):
    """``bcl,bdl`` (no arrow) sums the batch letter away; the others have no layer form."""
    operands = 1 if "," not in equation else 2
    model = module_from(lambda m, x: torch.einsum(equation, *[x] * operands).flatten(1))
    with pytest.raises(ins.ConversionError, match=f"einsum.*{message}"):
        ins.convert(model, input_dim=[4, 4], tracer="fx")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rms_norm_without_eps_takes_the_epsilon_of_the_traced_dtype(outputs_match, dtype):
    """``eps=None`` is the machine epsilon of the dtype at run time; the conversion fixes
    that of the dtype the model was traced in (convert ``model.double()`` for float64)."""
    model = nn.Sequential(nn.Linear(9, 9), nn.RMSNorm(9)).eval().to(dtype)
    conv = ins.convert(model, input_dim=[4, 9],
                       dtype="float" if dtype == torch.float32 else "double")
    x = torch.randn(3, 4, 9, dtype=dtype) * 1e-4  # small enough for eps to matter
    with torch.no_grad():
        outputs_match(conv.model(x), model(x), 1e-6 if dtype == torch.float32 else 1e-12)


def test_every_export_gap_is_a_form():
    assert set(EXPORT_GAPS) <= {p.id for p in FORMS}


SKIPPED = [
    case("nn.Dropout", lambda m, x: m.fc2(m.drop(m.fc1(x))), TABULAR, drop=lambda: nn.Dropout(0.5)),
    case("nn.Identity", lambda m, x: m.fc2(m.drop(m.fc1(x))), TABULAR, drop=nn.Identity),
    case("nn.AlphaDropout", lambda m, x: m.fc2(m.drop(m.fc1(x))), TABULAR,
         drop=lambda: nn.AlphaDropout(0.3)),
    case("F.dropout(training=self.training)",
         lambda m, x: m.fc2(F.dropout(m.fc1(x), 0.5, training=m.training)), TABULAR),
    case("F.dropout(training=False)",
         lambda m, x: m.fc2(F.dropout(m.fc1(x), p=0.2, training=False)), TABULAR),
    case("x.clone()", lambda m, x: m.fc2(m.fc1(x).clone()), TABULAR),
]


@pytest.mark.parametrize(("fn", "input_dim", "attributes", "tracer"), with_tracers(SKIPPED))
def test_skipped_operation_leaves_no_layer(module_from, assert_converts, fn, input_dim,
                                           attributes, tracer):
    attributes = {"fc1": lambda: nn.Linear(6, 5), "fc2": lambda: nn.Linear(5, 2), **attributes}
    conv = run_case(module_from, assert_converts, fn, input_dim, attributes, tracer)
    assert [layer.type_name for layer in conv.model.layers] == ["Input", "Dense", "Dense"]


def test_dropout2d_in_cnn_is_skipped(module_from, assert_converts):
    torch.manual_seed(0)
    model = module_from(lambda m, x: m.pool(m.drop(m.conv(x))).flatten(1), conv=conv2d(),
                        drop=nn.Dropout2d(0.5), pool=nn.AdaptiveAvgPool2d(1))
    conv = assert_converts(model, IMAGE)
    assert "Dropout" not in repr(conv)


def test_max_of_two_tensors_is_refused_by_name(module_from):
    model = module_from(lambda m, x: torch.max(x, x.tanh()))
    with pytest.raises(ins.ConversionError, match="max of all entries, or of two tensors"):
        ins.convert(model, input_dim=[4], tracer="fx")
