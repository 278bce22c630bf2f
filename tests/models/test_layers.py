"""Layer-level tests: time features, RoPE, patches, attention kernels (float64 closed forms)."""

from __future__ import annotations

import math

import pytest
import torch

from tim.models.layers import (
    RotaryEmbedding2D,
    apply_rope,
    attention,
    math_attention,
    needs_differentiable_attention,
    patchify,
    rope_positions,
    select_kernel,
    swiglu_hidden_size,
    timestep_features,
    unpatchify,
)


def test_timestep_features_closed_form_cos_first() -> None:
    s = torch.tensor([0.0, 0.25, 1.0], dtype=torch.float64)
    features = timestep_features(s, dim=8)
    k = torch.arange(4, dtype=torch.float64)
    angles = s[:, None] * 10000.0 ** (-k / 4)
    expected = torch.cat([angles.cos(), angles.sin()], dim=-1)
    torch.testing.assert_close(features.double(), expected, atol=1e-6, rtol=0)
    assert features[0, :4].eq(1).all() and features[0, 4:].eq(0).all()  # t = 0: cos 1, sin 0


def test_swiglu_hidden_sizes_of_released_models() -> None:
    # published code: 768 -> 2048, 1152 -> 3072; tiny reference 64 -> 170.
    assert [swiglu_hidden_size(d, 4.0) for d in (768, 1152, 64)] == [2048, 3072, 170]


def test_rope_positions_grid_and_wrapped() -> None:
    grid = rope_positions(2, 3, "grid", torch.device("cpu"))
    assert grid.tolist() == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]  # (row, col)
    wrapped = rope_positions(2, 3, "wrapped", torch.device("cpu"))
    assert wrapped.tolist() == [[n % 2, n // 2] for n in range(6)]
    square = rope_positions(3, 3, "wrapped", torch.device("cpu"))
    assert square.tolist() == [[n % 3, n // 3] for n in range(9)]  # (col, row) on a square grid


def test_rope_is_a_rotation_with_relative_scores() -> None:
    """Scores <R_m q, R_n k> depend only on the position offset (the defining RoPE property)."""
    rope = RotaryEmbedding2D(head_dim=8, theta=10000.0, convention="grid")
    cos, sin = (x.double() for x in rope(4, 4, torch.device("cpu")))
    q = torch.randn(1, 1, 1, 8, dtype=torch.float64).expand(1, 1, 16, 8)
    k = torch.randn(1, 1, 1, 8, dtype=torch.float64).expand(1, 1, 16, 8)
    q_rot, k_rot = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    torch.testing.assert_close(q_rot.norm(dim=-1), q.norm(dim=-1))  # norm preserved
    scores = q_rot[0, 0] @ k_rot[0, 0].T  # (16, 16); token n = row * 4 + col
    # (row, col) = (0, 0)->(1, 2) and (2, 1)->(3, 3) have the same offset (1, 2).
    torch.testing.assert_close(scores[0, 6], scores[9, 15])
    assert not torch.isclose(scores[0, 6], scores[0, 9])


def test_rope_pairs_rotate_by_expected_angles() -> None:
    rope = RotaryEmbedding2D(head_dim=8, theta=10000.0, convention="grid")
    theta = rope.angles(2, 3, torch.device("cpu"))
    row, col = 1, 2
    n = row * 3 + col
    f = 10000.0 ** (-torch.arange(2, dtype=torch.float64) / 2)
    expected = torch.tensor(
        [row * f[0], row * f[0], row * f[1], row * f[1], col * f[0], col * f[0], col * f[1], col * f[1]]
    )
    torch.testing.assert_close(theta[n], expected.double())
    x = torch.tensor([1.0, 0.0] * 4, dtype=torch.float64).view(1, 1, 1, 8).expand(1, 1, 6, 8)
    cos, sin = (v.double() for v in rope(2, 3, torch.device("cpu")))
    rotated = apply_rope(x, cos, sin)[0, 0, n]
    torch.testing.assert_close(rotated[0::2], torch.cos(expected[0::2]).double(), atol=1e-7, rtol=0)
    torch.testing.assert_close(rotated[1::2], torch.sin(expected[0::2]).double(), atol=1e-7, rtol=0)


def test_rope_cache_per_grid_and_scale() -> None:
    rope = RotaryEmbedding2D(head_dim=8, theta=10000.0, convention="grid")
    a = rope(2, 4, torch.device("cpu"))
    assert rope(2, 4, torch.device("cpu"))[0] is a[0]
    assert rope(4, 2, torch.device("cpu"))[0].shape == (8, 8)
    full = rope.angles(4, 4, torch.device("cpu"))
    rope.scale = 0.5
    torch.testing.assert_close(rope.angles(4, 4, torch.device("cpu")), full * 0.5)
    assert rope(2, 4, torch.device("cpu"))[0] is not a[0]


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 4, 6, 10), (2, 1, 4, 12)])
def test_patchify_unpatchify_round_trip(shape: tuple[int, ...]) -> None:
    x = torch.randn(*shape)
    tokens = patchify(x, 2)
    assert tokens.shape == (shape[0], shape[2] * shape[3] // 4, 4 * shape[1])
    torch.testing.assert_close(unpatchify(tokens, 2, shape[2] // 2, shape[3] // 2), x, rtol=0, atol=0)


def test_unpatchify_layout_matches_released() -> None:
    """Pixel (row p + i, col p + j), channel c comes from token row w + col, feature (i p + j) C + c."""
    B, C, p, h, w = 1, 3, 2, 2, 3
    tokens = torch.arange(B * h * w * p * p * C, dtype=torch.float32).view(B, h * w, p * p * C)
    x = unpatchify(tokens, p, h, w)
    row, col, i, j, c = 1, 2, 1, 0, 2
    assert x[0, c, row * p + i, col * p + j] == tokens[0, row * w + col, (i * p + j) * C + c]


def test_math_attention_matches_sdpa_and_closed_form() -> None:
    q, k, v = (torch.randn(2, 3, 5, 8, dtype=torch.float64) for _ in range(3))
    reference = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), dim=-1) @ v
    torch.testing.assert_close(math_attention(q, k, v), reference)
    torch.testing.assert_close(attention(q, k, v, "sdpa"), reference)
    mask = torch.tensor([[True, True, False, True, False], [True] * 5]).view(2, 1, 1, 5)
    masked = math_attention(q, k, v, mask)
    reference0 = (
        torch.softmax(q[0] @ k[0, :, [0, 1, 3]].transpose(-1, -2) / math.sqrt(8), -1) @ v[0, :, [0, 1, 3]]
    )
    torch.testing.assert_close(masked[0], reference0)
    torch.testing.assert_close(attention(q, k, v, "sdpa", mask), masked)


def test_differentiable_path_is_chosen_under_jvp() -> None:
    q, k, v = (torch.randn(1, 2, 4, 8, dtype=torch.float64) for _ in range(3))
    seen: list[bool] = []

    def f(q: torch.Tensor) -> torch.Tensor:
        seen.append(needs_differentiable_attention(q))
        return attention(q, k, v, "sdpa")

    dq = torch.randn_like(q)
    _, tangent = torch.func.jvp(f, (q,), (dq,))
    eps = 1e-6
    finite = (attention(q + eps * dq, k, v, "sdpa") - attention(q - eps * dq, k, v, "sdpa")) / (2 * eps)
    torch.testing.assert_close(tangent, finite, atol=1e-7, rtol=1e-6)
    assert seen == [True] and not needs_differentiable_attention(q)


def test_sdpa_cpu_kernel_is_memory_efficient() -> None:
    """On CPU, SDPA must run the chunked flash kernel (never an N x N score matrix)."""
    from torch.profiler import profile

    q = torch.randn(1, 2, 64, 16)
    mask = torch.ones(1, 1, 1, 64, dtype=torch.bool)
    with profile() as prof:
        attention(q, q, q, "sdpa")
        attention(q, q, q, "sdpa", mask)
    kernels = {e.key: e.count for e in prof.key_averages()}
    assert kernels.get("aten::_scaled_dot_product_flash_attention_for_cpu") == 2, sorted(kernels)
    assert "aten::softmax" not in kernels and "aten::_softmax" not in kernels


@pytest.mark.parametrize(
    ("backend", "differentiable", "cuda_half", "masked", "installed", "expected"),
    [
        ("auto", False, True, False, True, "flash"),
        ("flash", False, True, False, True, "flash"),
        ("auto", False, True, False, False, "sdpa"),  # fallback when flash-attn is absent
        ("auto", False, False, False, True, "sdpa"),  # CPU or float32
        ("auto", False, True, True, True, "sdpa"),  # flash-attn takes no mask
        ("sdpa", False, True, False, True, "sdpa"),
        ("auto", True, True, False, True, "math"),  # under torch.func.jvp
        ("sdpa", True, False, False, False, "math"),
        ("math", False, True, False, True, "math"),
    ],
)
def test_kernel_selection(
    backend: str, differentiable: bool, cuda_half: bool, masked: bool, installed: bool, expected: str
) -> None:
    kernel = select_kernel(
        backend, differentiable=differentiable, cuda_half=cuda_half, masked=masked, flash_installed=installed
    )
    assert kernel == expected
