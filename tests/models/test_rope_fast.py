"""The fast RoPE (issue 14) equals the reference rotation in every form and layout."""

from __future__ import annotations

import pytest
import torch

from tim.models.layers import RotaryEmbedding2D, apply_rope, rope_rotate


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_rope_rotate_equals_apply_rope(dtype: torch.dtype) -> None:
    rope = RotaryEmbedding2D(head_dim=16, theta=10000.0, convention="grid")
    table_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    cos, sin = rope(3, 5, torch.device("cpu"), table_dtype)
    tables = rope.tables(3, 5, torch.device("cpu"), table_dtype)
    x = torch.randn(2, 15, 4, 16, generator=torch.Generator().manual_seed(0)).to(dtype)  # (B, N, heads, hd)
    reference = apply_rope(x.transpose(1, 2), cos, sin).transpose(1, 2)  # the (B, heads, N, hd) layout
    fast = rope_rotate(x, tables)
    real = rope_rotate(
        x, type(tables)(tables.cos, tables.sin_signed, None)
    )  # the form used under torch.compile
    assert fast.dtype == dtype and real.dtype == dtype
    tolerance = {"atol": 1e-2, "rtol": 1e-2} if dtype == torch.bfloat16 else {}
    torch.testing.assert_close(fast, reference, **tolerance)
    torch.testing.assert_close(real, reference, **tolerance)
    assert not torch.allclose(fast.float(), x.float())  # it does rotate


def test_rope_rotate_on_strided_views_and_under_jvp() -> None:
    """q/k are views of the qkv projection (no copy); forward-mode AD (JVP derivative) goes through."""
    rope = RotaryEmbedding2D(head_dim=8, theta=10000.0, convention="grid")
    tables = rope.tables(2, 2, torch.device("cpu"))
    qkv = torch.randn(3, 4, 3, 2, 8)  # (B, N, 3, heads, hd)
    q = qkv.unbind(2)[0]
    torch.testing.assert_close(rope_rotate(q, tables), rope_rotate(q.contiguous(), tables))
    dq = torch.randn_like(q)
    _, tangent = torch.func.jvp(lambda v: rope_rotate(v, tables), (q.contiguous(),), (dq,))
    torch.testing.assert_close(tangent, rope_rotate(dq, tables))  # a rotation is linear
