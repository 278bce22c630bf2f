"""Process groups and model wrapping: the only torch.distributed user in tim.training.

Launch with ``torchrun --nproc_per_node N -m tim.cli.main train ...``: torchrun sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init` reads them and
joins the group (NCCL on CUDA, gloo on CPU). Without them everything runs single-process.

Wrapping happens in :func:`wrap` and nowhere else:

* ``ddp``: ``DistributedDataParallel``. The objective's derivative passes (DDE: two no-grad
  forward passes) run on the *unwrapped* module so they neither trigger DDP's gradient hooks nor
  desynchronise its reducer (PyTorch GitHub issues 102197 and 182661).
* ``fsdp``: FSDP2 ``fully_shard`` on every block and on the root. The module stays the same
  object and each forward all-gathers its shards, so the derivative passes run on the sharded
  module itself. DDE needs nothing but ordinary no-grad forward passes, which is exactly what
  FSDP (and fused/flash attention kernels) are built for; tests/training/test_distributed.py
  checks that DDE on the shards equals DDE on the unsharded network. (A JVP additionally needs a
  forward-mode rule for every kernel it meets: flash attention has none, SDPA none on CPU. For
  the record, on torch 2.13 CPU/gloo ``torch.func.jvp`` with respect to the time input did run
  through ``fully_shard`` for a small MLP; it is not what our FSDP path relies on.)

Loss normalisation: every process computes the mean loss of its own rows; DDP and FSDP average
gradients over processes, which equals the mean over the global batch because every process gets
the same number of rows (``batch_size`` must divide evenly).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from tim.errors import TimError, first_line

T = TypeVar("T")


@dataclass(frozen=True)
class DistEnv:
    """Where this process runs.

    Attributes:
        rank: global rank.
        world_size: number of processes.
        local_rank: rank on this machine (selects the GPU).
        device: this process's device.
        owns_group: :func:`init` created the process group (so :func:`cleanup` destroys it).
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files, logs and the progress bar."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without a GPU is a TimError."""
    if name == "cuda" and not torch.cuda.is_available():
        raise TimError(
            "train.device = 'cuda' but no CUDA device is available", "set train.device=cpu or auto"
        )
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise TimError(
            f"process with LOCAL_RANK={local_rank} needs GPU {local_rank} but only {count} GPU(s) are visible",
            "start at most one process per GPU (torchrun --nproc_per_node) or fix CUDA_VISIBLE_DEVICES",
        )
    device = torch.device("cuda", local_rank)
    try:
        torch.empty(
            1, device=device
        )  # a GPU that is busy, broken or in exclusive use by another process fails here
    except RuntimeError as error:
        raise TimError(
            f"{device} is not usable ({first_line(error)})",
            "free or reset the GPU, pick another with CUDA_VISIBLE_DEVICES, or set train.device=cpu",
        ) from None
    return device


def init(device: str = "auto") -> DistEnv:
    """Join the torchrun process group if launched by torchrun, else describe a single process.

    Args:
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (train.device).

    Returns:
        The process's :class:`DistEnv`.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device, local_rank)
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    owns_group = world_size > 1 and not dist.is_initialized()
    if owns_group:
        backend = "nccl" if resolved.type == "cuda" else "gloo"
        dist.init_process_group(
            backend,
            timeout=datetime.timedelta(minutes=30),
            device_id=resolved if resolved.type == "cuda" else None,
        )
    return DistEnv(
        rank=rank, world_size=world_size, local_rank=local_rank, device=resolved, owns_group=owns_group
    )


def cleanup(env: DistEnv) -> None:
    """Leave the process group if :func:`init` joined it (a caller's own group is left alone)."""
    if env.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(value: Tensor, env: DistEnv) -> Tensor:
    """Mean of a tensor over processes (returns a new tensor on this process's device)."""
    value = value.detach().to(env.device, copy=True)  # NCCL reduces device tensors only
    if env.distributed:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= env.world_size
    return value


def any_process(flag: bool, env: DistEnv) -> bool:
    """True when ``flag`` is true on at least one process (so all processes take the same branch)."""
    if not env.distributed:
        return flag
    value = torch.tensor([float(flag)], device=env.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def any_process_each(flags: list[bool], env: DistEnv) -> list[bool]:
    """:func:`any_process` for several flags with one all-reduce (the loop's per-step stop check)."""
    if not env.distributed:
        return list(flags)
    value = torch.tensor([float(flag) for flag in flags], device=env.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return [bool(v) for v in value.tolist()]


def on_main(env: DistEnv, action: Callable[[], T]) -> T | None:
    """Run ``action`` on rank 0 only; a TimError there is raised on every process (no hang at a barrier).

    Returns:
        The action's result on rank 0, None elsewhere.
    """
    result, error = None, None
    if env.is_main:
        try:
            result = action()
        except TimError as raised:
            error = raised
    if any_process(error is not None, env):  # also the barrier: nobody runs ahead of rank 0
        raise (
            error
            if error is not None
            else TimError("rank 0 stopped with an error", "see rank 0's message above")
        )
    return result


def _shard_units(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks to shard individually (each block's weights gathered only while used)."""
    blocks = getattr(model, "blocks", None)
    return list(blocks) if isinstance(blocks, nn.ModuleList) else []


def wrap(
    model: nn.Module, ema: nn.Module, env: DistEnv, parallel: str, param_dtype: str = "fp32"
) -> tuple[nn.Module, nn.Module]:
    """Wrap the model (and shard the EMA the same way under FSDP): the ONE place that does it.

    Args:
        model: the network, already on ``env.device``.
        ema: its EMA copy (also on ``env.device``).
        env: this process.
        parallel: ``"ddp"`` or ``"fsdp"``.
        param_dtype: FSDP2 only: ``"bf16"`` gathers the model's weights in bfloat16 for its forward
            and backward passes (FSDP2's ``MixedPrecisionPolicy``; gradients are reduced in float32
            and the sharded weights, the optimizer and the EMA stay float32).

    Returns:
        ``(F, F_nograd)``: the module to call for the gradient pass and the one for the
        objective's no-grad derivative passes (the unwrapped module under DDP, the sharded one
        under FSDP). Single-process: both are ``model``.
    """
    if not env.distributed:
        return model, model
    if parallel == "ddp":
        ids = [env.device.index] if env.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids), model
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    bf16 = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for module in (model, ema):
        policy = bf16 if param_dtype == "bf16" and module is model else MixedPrecisionPolicy()
        for unit in _shard_units(module):
            fully_shard(unit, mp_policy=policy)
        fully_shard(module, mp_policy=policy)
    return model, model


@contextmanager
def no_sync(F: nn.Module, active: bool) -> Iterator[None]:
    """Skip gradient synchronisation for an accumulation micro-batch that is not the last one."""
    if active and isinstance(F, nn.parallel.DistributedDataParallel):
        with F.no_sync():
            yield
    elif active and hasattr(F, "set_requires_gradient_sync"):  # FSDP2
        F.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            F.set_requires_gradient_sync(True)
    else:
        with nullcontext():
            yield


def _options(**kwargs: bool) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kwargs)


# The torch.distributed.checkpoint state-dict API gives the same layout (parameter names as keys,
# also for the optimizer state) for plain, DDP-unwrapped and FSDP2-sharded modules, so a checkpoint
# written by any of them resumes under any other.


def full_model_state(model: nn.Module) -> dict[str, Tensor]:
    """The complete (unsharded) model state on CPU; under FSDP every process must call it."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_options(cpu_offload=True))


def load_full_model_state(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Load a complete state into a (possibly sharded) model; every process passes the full state."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    set_model_state_dict(model, state, options=_options())


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The complete optimizer state on CPU, keyed by parameter name (gathered under FSDP)."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=_options(cpu_offload=True))


def load_full_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    """Load a complete optimizer state (scattered to shards under FSDP)."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=_options())
