"""Worker for tests/training/test_distributed.py, launched with ``torchrun --nproc_per_node 2``.

``python -m torch.distributed.run --standalone --nproc_per_node 2 distributed_worker.py OUT OVERRIDES...``
trains the same tiny run twice in one process group, once wrapped with DDP and once sharded with
FSDP2 (``OUT/ddp``, ``OUT/fsdp``), and writes ``OUT/dde_rank<k>.json``: the DDE time derivative of
an FSDP2-sharded network (forward passes only, under no_grad) against the same network unsharded.

``... distributed_worker.py --precision-modes OUT OVERRIDES...`` trains the run FSDP2-sharded with
bf16 autocast (``train.precision=bf16``) once per ``objective.derivative_precision`` mode
(``OUT/<mode>``) and writes ``OUT/<mode>_rank<k>.safetensors``: the final model and EMA weights
as rank k holds them, all-gathered from the shards after training.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist


def dde_on_sharded_module(out: Path) -> None:
    """DDE through fully_shard: every no-grad forward all-gathers the shards, nothing else is needed."""
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    from tim.models import build_model
    from tim.objective import dde_derivative
    from tim.paths import LinearPath

    torch.manual_seed(0)
    sharded = build_model("TiM-digits", hidden_size=32, depth=2, num_heads=2, modulation_rank=8)
    torch.nn.init.normal_(sharded.final_layer.linear.weight)  # a non-zero output, so dF/dt is not trivially 0
    plain = build_model("TiM-digits", hidden_size=32, depth=2, num_heads=2, modulation_rank=8)
    plain.load_state_dict(sharded.state_dict())
    for block in sharded.blocks:
        fully_shard(block)
    fully_shard(sharded)
    sharded_params = all(isinstance(p, DTensor) for p in sharded.parameters())
    generator = torch.Generator().manual_seed(1)
    x, z = torch.randn(4, 1, 8, 8, generator=generator), torch.randn(4, 1, 8, 8, generator=generator)
    t = torch.tensor([0.9, 0.7, 0.5, 0.3])
    r, cond = t * 0.5, {"y": torch.tensor([0, 1, 2, 3])}
    path = LinearPath()
    with torch.no_grad():
        on_shards = dde_derivative(sharded, path, x, z, t, r, cond)
        reference = dde_derivative(plain, path, x, z, t, r, cond)
    report = {
        "max_abs_diff": (on_shards - reference).abs().max().item(),
        "max_abs": reference.abs().max().item(),
        "parameters_are_dtensors": sharded_params,
    }
    (out / f"dde_rank{dist.get_rank()}.json").write_text(json.dumps(report))


def main() -> None:
    torch.set_num_threads(1)
    out, overrides = Path(sys.argv[1]), sys.argv[2:]
    dist.init_process_group("gloo")  # train() joins an existing group and leaves it alone
    from tim.training import load_config, train

    for parallel in ("ddp", "fsdp"):
        train(load_config(None, [*overrides, f"train.parallel={parallel}"]), out / parallel)
    dde_on_sharded_module(out)
    dist.destroy_process_group()


DERIVATIVE_PRECISIONS = ("fp32", "tf32", "mixed", "bf16")


def precision_modes() -> None:
    """FSDP2 + bf16 autocast with each DDE precision mode; each rank writes the weights it ends with."""
    from safetensors.torch import save_file
    from torch.distributed.tensor import DTensor

    from tim.training import distributed, load_config, train

    torch.set_num_threads(1)
    out, overrides = Path(sys.argv[2]), sys.argv[3:]
    dist.init_process_group("gloo")
    wrapped: dict[str, torch.nn.Module] = {}
    original_wrap = distributed.wrap

    def recording_wrap(model, ema, env, parallel, *args):  # noqa: ANN001, ANN002, ANN202 - as wrap
        wrapped.update(model=model, ema=ema)  # fully_shard keeps the module objects
        return original_wrap(model, ema, env, parallel, *args)

    distributed.wrap = recording_wrap
    try:
        for run in [*DERIVATIVE_PRECISIONS, *(f"{mode}-bf16params" for mode in DERIVATIVE_PRECISIONS)]:
            mode, params = run.split("-")[0], "bf16" if run.endswith("bf16params") else "fp32"
            extra = ["train.parallel=fsdp", "train.precision=bf16", f"objective.derivative_precision={mode}"]
            extra.append(f"train.fsdp_param_dtype={params}")
            train(load_config(None, [*overrides, *extra]), out / run)
            weights = {}
            for part, module in wrapped.items():
                for key, value in module.state_dict().items():
                    full = value.full_tensor() if isinstance(value, DTensor) else value  # a collective
                    weights[f"{part}.{key}"] = full.detach().cpu().contiguous()
            save_file(weights, str(out / f"{run}_rank{dist.get_rank()}.safetensors"))
    finally:
        distributed.wrap = original_wrap
    dist.destroy_process_group()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--precision-modes"]:
        precision_modes()
    else:
        main()
