"""ROAD: noisy linear imputation against a direct solve of the paper's equations, and the
ROAD curve of a linear model against its closed form.

The reference imputation writes one equation per removed pixel, as Rong et al. 2022
define it: the pixel equals the weighted mean of its neighbours inside the image
(1/6 direct, 1/12 diagonal), kept neighbours with their values, and solves the
sparse system with scipy's direct solver.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.sparse import lil_matrix
from scipy.sparse.linalg import spsolve
from torch import nn

import innsight as ins
from innsight.metrics.imputation import (
    DENSE_PIXELS,
    iterative_imputation,
    linear_imputation,
    noisy_imputation,
    stepped_imputation,
)


def reference_imputation(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """``image`` ``(C, H, W)`` with the ``removed`` ``(H, W)`` pixels imputed, no noise."""
    _, h, w = image.shape
    unknown = [(i, j) for i in range(h) for j in range(w) if removed[i, j]]
    if not unknown:
        return image.copy()
    index = {pixel: k for k, pixel in enumerate(unknown)}
    a = lil_matrix((len(unknown), len(unknown)))
    b = np.zeros((len(unknown), image.shape[0]))
    for k, (i, j) in enumerate(unknown):
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                ii, jj = i + di, j + dj
                if (di, dj) == (0, 0) or not (0 <= ii < h and 0 <= jj < w):
                    continue
                weight = 1 / 12 if di and dj else 1 / 6
                a[k, k] += weight
                if removed[ii, jj]:
                    a[k, index[ii, jj]] -= weight
                else:
                    b[k] += weight * image[:, ii, jj]
    solution = spsolve(a.tocsc(), b).reshape(len(unknown), -1)
    out = image.copy()
    for k, (i, j) in enumerate(unknown):
        out[:, i, j] = solution[k]
    return out


@pytest.mark.parametrize("impute", [linear_imputation, iterative_imputation])
def test_imputation_solves_the_papers_equations(impute):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(5, 2, 7, 6))
    removed = rng.random((5, 7, 6)) < np.array([0.0, 0.2, 0.5, 0.9, 0.97])[:, None, None]
    removed[4] = True
    removed[4, 0, 0] = False  # one kept corner: everything else from it
    ours = impute(torch.tensor(images), torch.tensor(removed)).numpy()
    for i in range(5):
        np.testing.assert_allclose(ours[i], reference_imputation(images[i], removed[i]),
                                   atol=1e-7)
    np.testing.assert_array_equal(ours[0], images[0])  # nothing removed, nothing changed
    np.testing.assert_allclose(ours[4], images[4][:, :1, :1] * np.ones((1, 7, 6)), atol=1e-7)



def test_large_images_with_a_large_hole():
    """Beyond DENSE_PIXELS a curve's rows are solved one by one: a block of 30 x 30
    pixels removed from 48 x 48 images, and scattered pixels, in float32 as ROAD gets
    them (conjugate gradients took hundreds of steps for such a hole)."""
    rng = np.random.default_rng(0)
    images = rng.normal(size=(2, 3, 48, 48)).astype(np.float32)
    assert 48 * 48 > DENSE_PIXELS
    offset = np.abs(np.arange(48) - 23.5)
    centre = np.maximum(offset[:, None], offset[None, :]).ravel()  # image 1: a growing block
    turn = np.stack([rng.permutation(48 * 48), centre.argsort(kind="stable").argsort()])
    owner, count = torch.tensor([0, 0, 1]), torch.tensor([1000, 2200, 900])
    ours = noisy_imputation(torch.tensor(images), torch.tensor(turn), owner, count).numpy()
    for row, (k, n) in enumerate(zip(owner.tolist(), count.tolist())):
        removed = (turn[k] < n).reshape(48, 48)
        np.testing.assert_allclose(ours[row], reference_imputation(images[k].astype(np.float64),
                                                                   removed), atol=1e-5)
    assert (turn[1] < 900).reshape(48, 48)[9:39, 9:39].all()  # the block of 30 x 30

@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-11), (torch.float32, 1e-5)])
def test_stepped_imputation_solves_the_papers_equations(dtype, atol):
    """Every step of nested removals (in any order of rows, one image's rows apart),
    down to one kept pixel, against the direct sparse solve."""
    rng = np.random.default_rng(1)
    images = rng.normal(size=(3, 2, 7, 6))
    turn = np.stack([rng.permutation(42) for _ in range(3)])
    owner = np.repeat(np.arange(3), 8)
    count = np.tile([0, 1, 5, 13, 21, 30, 40, 41], 3)
    pick = rng.permutation(len(owner))[:-2]
    owner, count = owner[pick], count[pick]
    ours = stepped_imputation(torch.tensor(images, dtype=dtype), torch.tensor(turn),
                              torch.tensor(owner), torch.tensor(count)).double().numpy()
    for row, (o, k) in enumerate(zip(owner, count, strict=True)):
        expected = reference_imputation(images[o], (turn[o] < k).reshape(7, 6))
        np.testing.assert_allclose(ours[row], expected, atol=atol)


@pytest.fixture(scope="module")
def bench_sized_steps():
    """Steps of two 2x32x32 images around half of the pixels removed (where the removed
    and the kept side meet), removal in random order and in the order of distance from
    a point (a growing blob, as relevance often removes), with their direct solves."""
    rng = np.random.default_rng(2)
    images = rng.normal(size=(2, 2, 32, 32))
    rows, cols = np.mgrid[:32, :32]
    distance = ((rows - 9) ** 2 + (cols - 20) ** 2).ravel() + 1e-3 * rng.random(1024)
    turn = np.stack([rng.permutation(1024), distance.argsort().argsort()])
    owner = np.repeat([0, 1], 6)
    count = np.tile([300, 511, 512, 513, 700, 1023], 2)
    expected = [reference_imputation(images[o], (turn[o] < k).reshape(32, 32))
                for o, k in zip(owner, count, strict=True)]
    return images, turn, owner, count, np.stack(expected)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-11), (torch.float32, 5e-5)])
def test_stepped_imputation_of_32x32_images(bench_sized_steps, dtype, atol, threads):
    """The documented accuracy at the benchmark's image size, on both sides of half, with
    the images on one Python thread and on two."""
    images, turn, owner, count, expected = bench_sized_steps
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ours = stepped_imputation(torch.tensor(images, dtype=dtype), torch.tensor(turn),
                                  torch.tensor(owner), torch.tensor(count, dtype=torch.int32))
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
    np.testing.assert_allclose(ours.double().numpy(), expected, rtol=0, atol=atol)


def test_stepped_imputation_at_the_largest_dense_size():
    """2048 pixels (:data:`DENSE_PIXELS`) in float32, just beyond half removed, where the
    kept side's float32 error is largest: within the documented 1e-4."""
    rng = np.random.default_rng(3)
    image = rng.normal(size=(1, 1, 64, 32))
    turn = rng.permutation(2048)[None]
    count = np.array([1025, 1365])
    ours = stepped_imputation(torch.tensor(image, dtype=torch.float32), torch.tensor(turn),
                              torch.zeros(2, dtype=torch.long), torch.tensor(count))
    for row, k in enumerate(count):
        expected = reference_imputation(image[0], (turn[0] < k).reshape(64, 32))
        np.testing.assert_allclose(ours[row].double().numpy(), expected, rtol=0, atol=1e-4)


def test_stepped_imputation_restores_the_thread_count():
    """It runs torch on one thread per Python thread and gives the caller's setting back."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        stepped_imputation(torch.randn(2, 1, 4, 4), torch.stack([torch.randperm(16)] * 2),
                           torch.tensor([0, 1, 1]), torch.tensor([3, 12, 5]))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_noise_goes_onto_the_removed_pixels_only():
    x = torch.randn(3, 2, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    turn = torch.rand(3, 25, generator=torch.Generator().manual_seed(1)).argsort(1).argsort(1)
    owner, count = torch.tensor([0, 1, 2, 2]), torch.tensor([12, 3, 0, 20])
    clean = noisy_imputation(x, turn, owner, count)
    noisy = noisy_imputation(x, turn, owner, count, 0.5, torch.Generator().manual_seed(7))
    draws = 0.5 * torch.randn(4, 2, 5, 5, generator=torch.Generator().manual_seed(7),
                              dtype=torch.float64)
    mask = (turn[owner] < count[:, None]).view(4, 1, 5, 5).expand_as(clean)
    torch.testing.assert_close(noisy[mask], (clean + draws)[mask], rtol=0, atol=1e-12)
    torch.testing.assert_close(noisy[~mask], x[owner][~mask], rtol=0, atol=0)


@pytest.mark.parametrize("order", ["most_relevant_first", "least_relevant_first"])
def test_road_curve_of_a_linear_model(order):
    c, h, w = 2, 5, 4
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 3)).double().eval()
    conv = ins.convert(model, input_dim=[c, h, w], dtype="double")
    x = torch.randn(3, c, h, w, dtype=torch.float64)
    res = ins.run_grad(conv, x, output_idx=[0, 2], times_input=True, dtype="double")
    scores = ins.evaluate(res, [ins.metrics.ROAD(order=order, features_in_step=3, noise=0.0)])
    label = "road" if order == "most_relevant_first" else "road_lerf"
    assert set(scores["metric"]) == {label}
    curves = scores.attrs["curves"]
    weight, bias = (p.detach().numpy() for p in model[1].parameters())
    values = res.get_result()  # (3, c, h, w, 2)
    counts = np.arange(0, h * w, 3)
    for i, sample in enumerate(x.numpy()):
        for t, node in enumerate([0, 2]):
            relevance = values[i, ..., t].sum(0).ravel()
            ranked = np.argsort(-relevance if order == "most_relevant_first" else relevance,
                                kind="stable")
            expected = []
            for k in counts:
                removed = np.zeros(h * w, bool)
                removed[ranked[:k]] = True
                image = reference_imputation(sample, removed.reshape(h, w))
                expected.append(weight[node] @ image.ravel() + bias[node])
            ours = curves[(curves["data"] == i) & (curves["output_node"] == f"Y{node + 1}")]
            np.testing.assert_allclose(ours.sort_values("step")["value"], expected, atol=1e-7)
            np.testing.assert_allclose(ours.sort_values("step")["x"], counts / (h * w))
            row = scores[(scores["data"] == i) & (scores["output_node"] == f"Y{node + 1}")]
            np.testing.assert_allclose(row["value"], np.trapezoid(expected, counts / (h * w)),
                                       atol=1e-7)
    assert scores.attrs["higher_is_better"] == {label: order != "most_relevant_first"}


def test_road_noise_is_seeded(small_cnn, images):
    conv = ins.convert(small_cnn, input_dim=[3, 8, 8])
    res = ins.run_grad(conv, images, output_idx=[1])
    first, again, other = (ins.evaluate(res, ["road"], seed=s)["value"] for s in (0, 0, 1))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_road_needs_images():
    conv = ins.convert(nn.Linear(4, 2).eval(), input_dim=[4])
    with pytest.raises(ValueError, match="'road' imputes pixels of images.*shape \\[\\(4,\\)\\]"):
        ins.evaluate(ins.run_grad(conv, torch.randn(2, 4)), ["road"])


@pytest.mark.parametrize("kwargs, match", [({"noise": -1}, "`noise` must be a number >= 0"),
                                           ({"noise": "a"}, "`noise` must be a number >= 0"),
                                           ({"order": "random"}, "`order` must be one of"),
                                           ({"features_in_step": 0}, "`features_in_step`")])
def test_road_settings_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ins.metrics.ROAD(**kwargs)
