"""torch.compile of the TiM network: no graph breaks in the forward, the DDE passes and the backward (issue 14)."""

from __future__ import annotations

import pytest
import torch

from tim.models import build_model
from tim.objective import dde_derivative
from tim.paths import LinearPath


def _inputs() -> tuple:
    g = torch.Generator().manual_seed(0)
    x, z = torch.randn(4, 4, 8, 8, generator=g), torch.randn(4, 4, 8, 8, generator=g)
    t = torch.rand(4, generator=g) * 0.9 + 0.05
    return x, z, t, t * 0.5, torch.tensor([1, 2, 3, 10])


def test_fullgraph_compile_of_forward_dde_and_backward_matches_eager() -> None:
    """fullgraph=True raises on any graph break; aot_eager traces the backward graph too (no codegen: fast)."""
    torch.manual_seed(0)
    model = build_model("TiM-tiny")
    with torch.no_grad():  # non-zero adaLN-Zero layers, so the output depends on every input
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager", dynamic=False)
    x, z, t, r, y = _inputs()
    path = LinearPath()
    eager_dde = dde_derivative(model, path, x, z, t, r, {"y": y})
    compiled_dde = dde_derivative(compiled, path, x, z, t, r, {"y": y})
    torch.testing.assert_close(
        compiled_dde, eager_dde, atol=1e-3, rtol=1e-3
    )  # a difference quotient: 1/(2 eps) x rounding
    out = model(x, t, r, y=y)
    out.square().mean().backward()
    eager_grads = [
        None if p.grad is None else p.grad.clone() for p in model.parameters()
    ]  # projector: unused
    model.zero_grad(set_to_none=True)
    compiled_out = compiled(x, t, r, y=y)
    compiled_out.square().mean().backward()
    torch.testing.assert_close(compiled_out, out, atol=1e-5, rtol=1e-5)
    for eager, p in zip(eager_grads, model.parameters(), strict=True):
        assert (p.grad is None) == (eager is None)
        if eager is not None:
            torch.testing.assert_close(p.grad, eager, atol=1e-5, rtol=1e-4)
    assert out.abs().max() > 1e-3


@pytest.mark.slow
def test_dynamo_explain_counts_no_breaks() -> None:
    model = build_model("TiM-tiny")
    x, z, t, r, y = _inputs()
    forward = torch._dynamo.explain(model)(x, t, r, y=y)
    dde = torch._dynamo.explain(lambda: dde_derivative(model, LinearPath(), x, z, t, r, {"y": y}))()
    assert (forward.graph_break_count, dde.graph_break_count) == (0, 0), (
        forward.break_reasons,
        dde.break_reasons,
    )
