"""``train(cfg, run_dir)``: data -> model -> objective -> AdamW -> EMA -> logs -> checkpoints.

The loop knows no math: per micro-batch it calls the objective built from the config
(``tim.objective``), backpropagates ``loss / accumulation``, and after the last micro-batch clips,
steps and updates the EMA. Resume is "run the same command again": the latest good checkpoint in
``run_dir`` is loaded and the run continues bit-identically (CPU, deterministic settings).

Randomness: the objective's draws and the label dropout of micro-batch slot ``s`` of step ``n``
come from a generator seeded by ``(seed, n, s)``, with ``s = rank * accumulation + micro_index``.
Nothing needs saving to resume them, and a 2-process run with accumulation 1 draws exactly what a
1-process run with accumulation 2 draws (the data source splits rows the same way), which is what
the distributed equivalence test checks.

A step whose loss or gradient norm is not finite on any process is skipped (no optimizer or EMA
update), counted and logged; after ``train.max_bad_steps`` consecutive ones the run stops with a
TimError, keeping the last good checkpoint.

Faults and misuse (docs/reliability.md): the run directory is locked for the run's lifetime
(:mod:`tim.training.lock`); SIGTERM/SIGINT stop after the current step with a checkpoint
(:mod:`tim.training.preemption`); a resume whose checkpoints are all unusable or whose config
differs is refused (``restart`` / ``allow_config_change`` are the explicit ways out); a step that
cannot fit in memory is refused before anything is allocated (:mod:`tim.training.memory`). The
global RNG, which only a network's own dropout would use, is re-seeded from ``(seed, step, rank)``
before every step inside ``fork_rng``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from tim.data.build import build_data_source
from tim.data.sources import DataSource
from tim.errors import TimError
from tim.objective import TransitionLoss
from tim.training import distributed
from tim.training.checkpoint import load_latest
from tim.training.config import (
    RunConfig,
    build_objective_from_config,
    model_config,
    save_config,
)
from tim.training.ema import ema_decay, make_ema, update_ema
from tim.training.logging import MetricsLogger, Progress
from tim.training.memory import check_training_memory, parameter_count
from tim.training.outputs import export_run, sample_grids
from tim.training.preemption import Preempted, SignalStop, StopRequest
from tim.training.recipe import write_run_recipe
from tim.training.rundir import latest_checkpoint, newest_checkpoint, prepare_run_dir
from tim.training.state import TrainState, restore_state, save_state
from tim.training.text import check_text_model, is_text_model, with_null_prompt

_STREAM_TAG = 0x7111  # separates the loop's random streams from the data source's (same seed)
_GLOBAL_TAG = 0x7112  # the stream the global RNG is re-seeded from before every step (dropout)
_BYTES_PER_PARAM = 16  # fp32 model + EMA + two AdamW moments


def step_generator(seed: int, step: int, slot: int, device: torch.device) -> torch.Generator:
    """The generator of micro-batch ``slot`` of optimizer step ``step`` (counter-based, no state)."""
    mixed = np.random.SeedSequence([seed, _STREAM_TAG, step, slot]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(mixed) & 0x7FFF_FFFF_FFFF_FFFF)


def _seed_global_rng(seed: int, step: int, rank: int) -> None:
    """Re-seed the global RNG (CPU and CUDA) from ``(seed, step, rank)`` before an optimizer step.

    The loop itself never draws from it, but a network may (dropout): re-seeding per step makes
    those draws a function of the step, so a resumed run repeats them exactly at any world size
    and nothing has to be restored. ``train`` runs inside ``fork_rng``, so the caller's global
    RNG state is untouched.
    """
    mixed = np.random.SeedSequence([seed, _GLOBAL_TAG, step, rank]).generate_state(1, dtype=np.uint64)[0]
    torch.manual_seed(int(mixed) & 0x7FFF_FFFF_FFFF_FFFF)


def total_steps(cfg: RunConfig) -> int:
    """Optimizer steps of the run: ``train.steps``, or enough steps to see ``train.images`` images."""
    return math.ceil(cfg.train.images / cfg.train.batch_size) if cfg.train.images > 0 else cfg.train.steps


def learning_rate(cfg: RunConfig, step: int) -> float:
    """Constant learning rate after a linear warm-up over ``optim.warmup_steps`` (paper: none)."""
    warmup = cfg.optim.warmup_steps
    return cfg.optim.lr * min(1.0, (step + 1) / warmup) if warmup > 0 else cfg.optim.lr


def _micro_batch(cfg: RunConfig, env: distributed.DistEnv) -> int:
    """Global rows per micro-step (all processes); the data source gives each its share."""
    parts = cfg.optim.accumulation * env.world_size
    if cfg.train.batch_size % parts:
        raise TimError(
            f"train.batch_size = {cfg.train.batch_size} is not divisible by optim.accumulation x "
            f"processes = {parts}",
            f"choose a batch size that is a multiple of {parts}",
        )
    return cfg.train.batch_size // cfg.optim.accumulation


def _autocast(cfg: RunConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast where supported; the objective runs its derivative passes in float32."""
    if cfg.train.precision == "fp32":
        return contextlib.nullcontext()
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise TimError("train.precision = 'bf16' is not supported by this GPU", "set train.precision=fp32")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@contextlib.contextmanager
def tf32_matmuls(enabled: bool, device: torch.device) -> Iterator[None]:
    """``train.tf32`` on CUDA: TF32 float32 matmuls and cuDNN convolutions inside, restored on exit.

    TF32 keeps float32's range with a 10-bit mantissa and runs float32 matmuls on tensor cores
    (several times IEEE float32 throughput). Other devices are left untouched. The DDE passes
    follow it under the default ``objective.derivative_precision=auto`` (TF32 passes) and choose
    their own matmul precision in the explicit modes.
    """
    if device.type != "cuda":
        yield
        return
    matmul, cudnn = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("high" if enabled else "highest")
    torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(matmul)
        torch.backends.cudnn.allow_tf32 = cudnn


def _build_model(cfg: RunConfig, info: Any, device: torch.device) -> nn.Module:
    """The network, initialised from ``train.seed`` without touching the global RNG, checked against the data."""
    from tim.models import build_model

    config = model_config(cfg)
    channels = getattr(config, "in_channels", getattr(config, "dim", None))
    if channels != info.shape[0]:
        raise TimError(
            f"the model takes {channels} input channels but data items have shape {tuple(info.shape)}",
            f"set model.{'in_channels' if hasattr(config, 'in_channels') else 'dim'}={info.shape[0]}",
        )
    patch = getattr(config, "patch_size", 1)
    sizes = info.sizes or ([tuple(info.shape[1:])] if info.kind == "image" else [])
    if any(side % patch for size in sizes for side in size):
        raise TimError(
            f"data items of size {'x'.join(map(str, sizes[0]))} are not divisible by model.patch_size={patch}",
            f"choose a model.patch_size that divides the image sides, or data.image_size a multiple of {patch}",
        )
    check_text_model(config, info)
    conditional = getattr(config, "conditioning", "class") == "class" and config.num_classes > 0
    if conditional and info.num_classes != config.num_classes:
        raise TimError(
            f"the model expects {config.num_classes} classes but the data has {info.num_classes}",
            f"set model.num_classes={info.num_classes}"
            + (" and model.conditioning=none" if not info.num_classes else ""),
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        model = build_model(config).to(device)
    return with_null_prompt(model, info)  # text models: the encoder's features of "" (saved with the weights)


def _is_conditional(model: nn.Module) -> bool:
    config = model.config
    return is_text_model(config) or (
        getattr(config, "conditioning", "class") != "none" and getattr(config, "num_classes", 1) > 0
    )


def _condition(batch: dict[str, Tensor], device: torch.device, conditional: bool) -> dict[str, Tensor]:
    """The batch's condition tensors (labels...) for a conditional model; {} for an unconditional one."""
    return {key: value.to(device) for key, value in batch.items() if key != "x"} if conditional else {}


@dataclass(frozen=True)
class StepParts:
    """What every optimizer step uses, built once by ``_start``.

    Attributes:
        model: the plain network (parameters, EMA source, ``drop_cond``/``null_cond``).
        F: the gradient pass: ``model`` wrapped by DDP/FSDP/``torch.compile``, or with REPA the
            wrapped ``WithFeatures(model)`` that also returns the alignment features.
        F_nograd: the no-grad derivative passes (the unwrapped or separately compiled module).
        features_fn: the REPA feature pass (``F`` itself), None without REPA.
        ema: the EMA copy (also the objective's guidance teacher when its target needs one).
        objective: the loss (``tim.objective``); it decides what a step computes.
        optimizer: AdamW over ``model``'s parameters.
        source: this process's data source.
        autocast: bf16 autocast or a null context (``train.precision``).
        conditional: whether batches carry a condition for the network.
    """

    model: nn.Module
    F: nn.Module
    F_nograd: nn.Module
    features_fn: nn.Module | None
    ema: nn.Module
    objective: TransitionLoss
    optimizer: torch.optim.Optimizer
    source: DataSource
    autocast: contextlib.AbstractContextManager
    conditional: bool


def _train_step(
    cfg: RunConfig, env: distributed.DistEnv, state: TrainState, parts: StepParts
) -> dict[str, Any]:
    """One optimizer step over ``optim.accumulation`` micro-batches; returns its metrics."""
    model, objective, optimizer = parts.model, parts.objective, parts.optimizer
    accumulation = cfg.optim.accumulation
    _seed_global_rng(cfg.train.seed, state.step, env.rank)
    optimizer.zero_grad(set_to_none=True)
    losses, stats, rows = [], {}, 0
    for micro in range(accumulation):
        batch = parts.source.next_batch()
        rows += len(batch["x"])  # bucketed data: the batch size varies from step to step
        x, cond = batch["x"].to(env.device), _condition(batch, env.device, parts.conditional)
        generator = step_generator(cfg.train.seed, state.step, env.rank * accumulation + micro, env.device)
        dropped = model.drop_cond(cond, cfg.train.label_dropout, generator) if cond else cond
        with distributed.no_sync(parts.F, active=micro < accumulation - 1):
            with parts.autocast:
                out = objective(
                    parts.F_nograd if parts.features_fn else parts.F,
                    x,
                    cond=dropped,
                    generator=generator,
                    F_nograd=parts.F_nograd,
                    features_fn=parts.features_fn,
                    # The objective decides whether its target needs the EMA teacher (model guidance).
                    **objective.teacher_inputs(parts.ema, cond, model.null_cond),
                )
            (out.loss / accumulation).backward()
        losses.append(out.loss.detach().float())  # stays on the device: no host sync per micro-batch
        for key, value in out.stats.items():
            stats[key] = stats.get(key, 0.0) + value.detach().float() / accumulation
    max_norm = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else math.inf
    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm  # FSDP DTensor
    # Loss, gradient norm and stats stay on the device until the loop logs (_read_metrics).
    values = torch.stack(
        [torch.stack(losses).mean(), grad_norm.detach().float().reshape(()), *stats.values()]
    )
    finite, images = _step_outcome(values[:2], rows, env)
    metrics = {
        "images": images,
        "lr": learning_rate(cfg, state.step),
        "pending": (["loss", "grad_norm", *stats], values),
    }
    if not finite:
        optimizer.zero_grad(set_to_none=True)  # sg: the weights and the EMA stay untouched
        return metrics | {"finite": False}
    for group in optimizer.param_groups:
        group["lr"] = metrics["lr"]
    optimizer.step()
    decay = ema_decay(cfg.ema.decay, state.ema_updates, cfg.ema.warmup)
    update_ema(parts.ema, model, decay)
    state.ema_updates += 1
    return metrics | {"finite": True, "ema_decay": decay}


def _step_outcome(loss_and_norm: Tensor, rows: int, env: distributed.DistEnv) -> tuple[bool, int]:
    """``(finite on every process, global rows)`` with the step's only host sync.

    Skipping a non-finite step exactly needs its answer before the optimizer steps, so one
    device-to-host read per step remains: a single flag (one process), or the flag and the row
    count after one all-reduce (several processes; bucketed data sizes vary per step).
    """
    bad = (~torch.isfinite(loss_and_norm).all()).float()
    if not env.distributed:
        return not bool(bad), rows
    counts = distributed.all_reduce_mean(
        torch.stack([bad, torch.tensor(float(rows), device=bad.device)]), env
    )
    bad_share, rows_mean = (counts * env.world_size).tolist()
    return bad_share == 0, round(rows_mean)


def _read_metrics(metrics: dict[str, Any], env: distributed.DistEnv) -> dict[str, Any]:
    """The step's metrics as floats: global-batch means of the device values (one all-reduce and read).

    Called only when the loop logs (every ``train.log_every`` steps, and on a skipped step), on
    every process alike, since it is a collective under torchrun.
    """
    keys, values = metrics["pending"]
    means = dict(zip(keys, distributed.all_reduce_mean(values, env).tolist(), strict=True))
    return {key: value for key, value in metrics.items() if key != "pending"} | means


def train(
    cfg: RunConfig,
    run_dir: str | Path,
    *,
    data: DataSource | None = None,
    restart: bool = False,
    allow_config_change: bool = False,
) -> Path:
    """Train (or resume) a run described by ``cfg`` in ``run_dir``.

    Args:
        cfg: the resolved run configuration (:func:`tim.training.load_config`).
        run_dir: the run directory: checkpoints, ``config.json``, metrics, sample grids and the
            exported EMA model (``run_dir/pretrained``, a ``save_pretrained`` folder).
        data: a data source to use instead of the one ``cfg.data`` describes (tests, custom data);
            it must deliver this process's rows of each global micro-batch.
        restart: start again from step 0 even though ``run_dir`` holds a run; its checkpoints,
            metrics and samples are moved to ``run_dir/previous-<time>/`` (nothing is deleted).
        allow_config_change: resume although ``cfg`` differs from the run's saved config in
            fields that change the training (``tim.training.config.RESUMABLE_KEYS`` may always change).

    Returns:
        ``run_dir`` as a Path.

    Raises:
        TimError: bad settings, an unusable run directory (or one in use by another trainer),
            a resume that would have to guess, or too many consecutive non-finite steps.
        Preempted: SIGTERM/SIGINT arrived; the run stopped after the current step with a checkpoint.
    """
    run_dir = Path(run_dir)
    env = distributed.init(cfg.train.device)
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    devices = [env.device.index] if env.device.type == "cuda" else []
    stopped: Preempted | None = None
    try:
        if cfg.train.deterministic:
            torch.use_deterministic_algorithms(True)
        # fork_rng: the per-step re-seeding of the global RNG must not leak into the caller.
        with (
            StopRequest() as stop,
            torch.random.fork_rng(devices=devices),
            tf32_matmuls(cfg.train.tf32, env.device),
            contextlib.ExitStack() as held,
        ):
            return _run(
                cfg,
                run_dir,
                env,
                data,
                stop=stop,
                held=held,
                restart=restart,
                allow_config_change=allow_config_change,
            )
    except Preempted as error:
        # Free _run's frames (the traceback holds them, and with them the DDP model) before the
        # process group is left, so nothing of the run outlives the group. Without this a preempted
        # 2-process run intermittently aborted at exit (SIGABRT instead of EXIT_PREEMPTED; seen in 4
        # of ~15 runs of test_preemption.py's 2-process test under load); cause not isolated.
        stopped = error.with_traceback(None)
        gc.collect()  # the model's reference cycles too
    finally:
        torch.use_deterministic_algorithms(was_deterministic)  # leave the caller's process as it was
        distributed.cleanup(env)
    raise stopped


def _run(
    cfg: RunConfig,
    run_dir: Path,
    env: distributed.DistEnv,
    data: DataSource | None,
    *,
    stop: StopRequest,
    held: contextlib.ExitStack,
    restart: bool,
    allow_config_change: bool,
) -> Path:
    """Prepare the run (:func:`_start`), take the steps (:func:`_steps`), then draw the final grids and export."""
    parts, state, checkpoint = _start(
        cfg,
        run_dir,
        env,
        data,
        stop=stop,
        held=held,
        restart=restart,
        allow_config_change=allow_config_change,
    )
    preempted = _steps(cfg, run_dir, env, stop, parts, state, checkpoint)
    if preempted is not None:
        raise preempted  # no final grids or export: a preempted job has seconds, not minutes
    fsdp = env.distributed and cfg.train.parallel == "fsdp"
    try:  # the final checkpoint is saved: the grids may be abandoned, a rerun draws them again
        stop.check()
        if env.is_main or fsdp:
            sample_grids(cfg, run_dir, state.step, parts.ema, parts.objective, parts.source.info, env)
        stop.check()
    except SignalStop as stopped:
        raise Preempted(
            stopped.signal_name, state.step, newest_checkpoint(run_dir, env), "drawing the final sample grids"
        ) from None
    with stop.deferred("writing the exported weights"):  # seconds; a signal here lets the run finish
        export_run(cfg, run_dir, parts.ema, state, env)
    return run_dir


def _start(
    cfg: RunConfig,
    run_dir: Path,
    env: distributed.DistEnv,
    data: DataSource | None,
    *,
    stop: StopRequest,
    held: contextlib.ExitStack,
    restart: bool,
    allow_config_change: bool,
) -> tuple[StepParts, TrainState, Any]:
    """Lock the run folder, build everything, resume from the latest good checkpoint, save config.json.

    Returns:
        ``(the step's parts, the training state, the checkpoint resumed from or None)``.
    """
    micro_batch = _micro_batch(cfg, env)
    needed = (cfg.train.keep_last + 1) * _BYTES_PER_PARAM * parameter_count(model_config(cfg))
    # The lock first: a second trainer fails at once, before loading any data. Setting an old run
    # aside is a few renames that must not be cut in half (deferred); everything after it until the
    # first step only reads and allocates, so a signal there stops at once (interruptible).
    with stop.deferred("preparing the run folder"):
        lock = distributed.on_main(
            env, lambda: prepare_run_dir(run_dir, needed, restart, cfg.train.keep_last)
        )
    if lock is not None:
        held.callback(lock.release)
    try:
        with stop.interruptible():
            source, model, ema, objective, optimizer, (F, F_nograd, features_fn) = _set_up(
                cfg, env, data, micro_batch
            )
            stop.check()  # again at each phase boundary, in case a library swallowed the first stop
            checkpoint = latest_checkpoint(run_dir, env, cfg, model, optimizer, source)
            stop.check()
            state = TrainState()
            if checkpoint is not None:
                state = restore_state(
                    checkpoint, cfg, model, ema, optimizer, source, allow_config_change=allow_config_change
                )
            with stop.deferred("writing config.json and recipe.json"):  # after the resume check
                distributed.on_main(env, lambda: save_config(cfg, run_dir / "config.json"))
                distributed.on_main(env, lambda: write_run_recipe(cfg, run_dir))
    except SignalStop as stopped:
        raise Preempted(stopped.signal_name, None, newest_checkpoint(run_dir, env)) from None
    parts = StepParts(
        model=model,
        F=F,
        F_nograd=F_nograd,
        features_fn=features_fn,
        ema=ema,
        objective=objective,
        optimizer=optimizer,
        source=source,
        autocast=_autocast(cfg, env.device),
        conditional=_is_conditional(model),
    )
    return parts, state, checkpoint


def _steps(
    cfg: RunConfig,
    run_dir: Path,
    env: distributed.DistEnv,
    stop: StopRequest,
    parts: StepParts,
    state: TrainState,
    checkpoint: Any,
) -> Preempted | None:
    """Take the steps until the end, the time limit or a stop signal; logs, checkpoints and grids on the way.

    Returns:
        The :class:`Preempted` to raise when a signal stopped the run (after a checkpoint), else None.
    """
    total, fsdp = total_steps(cfg), env.distributed and cfg.train.parallel == "fsdp"
    model, ema, optimizer, source = parts.model, parts.ema, parts.optimizer, parts.source
    logger = MetricsLogger(
        run_dir,
        jsonl=cfg.logging.jsonl,
        csv_file=cfg.logging.csv,
        tensorboard=cfg.logging.tensorboard,
        enabled=env.is_main,
        resume_step=state.step,
    )
    progress = Progress(total, state.step, enabled=env.is_main and cfg.train.progress)
    if checkpoint is not None:
        progress.write(f"resuming from {checkpoint.path} (step {state.step}, {state.images} images)")
    started, saved = time.perf_counter(), state.step
    try:
        while state.step < total:
            metrics = _train_step(cfg, env, state, parts)
            state.step += 1
            state.images += metrics.pop("images")
            shown = None  # the device statistics are read only when logged (no per-step host sync)
            if not metrics.pop("finite"):
                _skip(cfg, run_dir, state, _read_metrics(metrics, env), logger, progress)
            else:
                state.bad_streak = 0
                if state.step % cfg.train.log_every == 0 or state.step == total:
                    metrics = _read_metrics(metrics, env)
                    seconds = round(time.perf_counter() - started, 3)
                    logger.log(
                        {"step": state.step, "images": state.images, **metrics}
                        | {"skipped": state.skipped, "seconds": seconds}
                    )
                    shown = metrics.get("mse", metrics["loss"])  # the weighted loss is ~constant by design
            progress.update(shown, state.images)
            if state.step % cfg.train.checkpoint_every == 0 or state.step == total:
                save_state(run_dir, cfg, state, model, ema, optimizer, source.state_dict(), env)
                saved = state.step
            if cfg.train.sample_every and state.step % cfg.train.sample_every == 0 and (env.is_main or fsdp):
                try:  # drawing a grid is interruptible: a signal abandons the grid, not the steps
                    sample_grids(cfg, run_dir, state.step, ema, parts.objective, source.info, env)
                except SignalStop:
                    pass  # stop.requested is set: the check below saves a checkpoint and stops
            late, stopping = _stop_flags(cfg, started, stop, env)  # every process stops after the same step
            if (late or stopping) and state.step < total:
                where = (
                    save_state(run_dir, cfg, state, model, ema, optimizer, source.state_dict(), env)
                    if saved != state.step
                    else newest_checkpoint(run_dir, env)
                )
                if stopping:
                    return Preempted(
                        stop.signal_name or "a stop signal (to another process)", state.step, where
                    )
                progress.write(
                    f"train.time_limit of {cfg.train.time_limit:g} min reached at step {state.step}"
                )
                break
    finally:
        progress.close()
        logger.close()
    return None


def _set_up(
    cfg: RunConfig, env: distributed.DistEnv, data: DataSource | None, micro_batch: int
) -> tuple[DataSource, nn.Module, nn.Module, Any, torch.optim.Optimizer, tuple[nn.Module, nn.Module, Any]]:
    """The data source, the network and its EMA, the objective, AdamW and the passes ``(F, F_nograd, features_fn)``."""
    source = data or build_data_source(
        cfg.data, batch_size=micro_batch, rank=env.rank, world_size=env.world_size, seed=cfg.train.seed
    )
    _check_memory(cfg, source.info, micro_batch // env.world_size, env)
    model = _build_model(cfg, source.info, env.device)
    ema = make_ema(model)
    objective = build_objective_from_config(cfg)
    F, F_nograd, features_fn, objective = _wrap(cfg, env, model, ema, objective, source.info)
    if cfg.train.compile:
        F, F_nograd, features_fn = _compile(F, F_nograd, features_fn, objective)
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=cfg.optim.lr,
        betas=cfg.optim.betas,
        weight_decay=cfg.optim.weight_decay,
        eps=cfg.optim.eps,
    )
    return source, model, ema, objective, optimizer, (F, F_nograd, features_fn)


def _wrap(
    cfg: RunConfig, env: distributed.DistEnv, model: nn.Module, ema: nn.Module, objective: Any, info: Any
) -> tuple[nn.Module, nn.Module, nn.Module | None, Any]:
    """``(F, F_nograd, features_fn, objective)``; with REPA the gradient pass is ``WithFeatures(model)``.

    DDP synchronises gradients only through ``forward``, so with REPA it wraps
    ``WithFeatures(model)`` (whose forward returns the alignment features too) and the projector
    gets its gradient; without REPA a projector would get none, which DDP refuses.
    """
    from tim.models import WithFeatures
    from tim.training.repa import build_repa

    alignment = build_repa(cfg.repa, model.config, info, env.device)
    ddp, fsdp = (
        env.distributed and cfg.train.parallel == "ddp",
        env.distributed and cfg.train.parallel == "fsdp",
    )
    if alignment is None:
        if ddp and getattr(model.config, "z_dim", 0) > 0:
            raise TimError(
                f"model.z_dim = {model.config.z_dim} adds a projector that nothing trains without REPA, "
                "and DDP requires a gradient for every parameter",
                "set model.z_dim=0, or set repa.encoder",
            )
        return (
            *distributed.wrap(model, ema, env, cfg.train.parallel, cfg.train.fsdp_param_dtype),
            None,
            objective,
        )
    if fsdp:
        raise TimError(
            "REPA under FSDP is not wired (the feature pass bypasses the root module's hooks)",
            "use train.parallel=ddp, or leave repa.encoder empty",
        )
    features_fn, _ = distributed.wrap(WithFeatures(model), ema, env, cfg.train.parallel)
    return features_fn, model, features_fn, dataclasses.replace(objective, alignment=alignment)


def _compile(
    F: nn.Module, F_nograd: nn.Module, features_fn: nn.Module | None, objective: Any
) -> tuple[nn.Module, nn.Module, nn.Module | None]:
    """``train.compile``: ``torch.compile`` the gradient pass and, for DDE, the derivative passes.

    The compiled modules share the parameters of ``model`` (checkpoints and the EMA keep using
    the plain module). ``dynamic=False``: each (batch, H, W) of a bucketed data source compiles
    once and is then reused (torch._dynamo's cache holds 8 shapes per function by default). The
    JVP derivative stays eager: forward-mode AD through a compiled graph is not supported.
    """
    compiled = torch.compile(F, dynamic=False)
    if F_nograd is F:
        nograd = compiled
    else:
        nograd = torch.compile(F_nograd, dynamic=False)
    if getattr(objective, "derivative", "dde") == "jvp":
        nograd = F_nograd
    return compiled, nograd, compiled if features_fn is F else features_fn


def _check_memory(cfg: RunConfig, info: Any, rows: int, env: distributed.DistEnv) -> None:
    """Refuse a step that cannot fit before the model or any batch is allocated (tim.training.memory)."""
    shapes = [tuple(info.shape[:1]) + tuple(size) for size in info.sizes] or [tuple(info.shape)]
    largest = max(shapes, key=lambda shape: math.prod(shape))
    check_training_memory(model_config(cfg), largest, max(1, rows), cfg.train.batch_size, env.device)


def _stop_flags(
    cfg: RunConfig, started: float, stop: StopRequest, env: distributed.DistEnv
) -> tuple[bool, bool]:
    """``(out of train.time_limit, stop signal received)``, agreed by every process with one all-reduce."""
    late = cfg.train.time_limit > 0 and time.perf_counter() - started > 60.0 * cfg.train.time_limit
    late, stopping = distributed.any_process_each([late, stop.requested], env)
    return late, stopping


def _skip(
    cfg: RunConfig,
    run_dir: Path,
    state: TrainState,
    metrics: dict[str, Any],
    logger: MetricsLogger,
    progress: Progress,
) -> None:
    """Count and log a non-finite step; stop after ``train.max_bad_steps`` in a row."""
    state.skipped += 1
    state.bad_streak += 1
    logger.log(
        {
            "step": state.step,
            "event": "non_finite",
            "loss": metrics["loss"],
            "grad_norm": metrics["grad_norm"],
            "skipped": state.skipped,
            "bad_streak": state.bad_streak,
        }
    )
    progress.write(
        f"step {state.step}: non-finite loss or gradient (loss={metrics['loss']}, "
        f"grad_norm={metrics['grad_norm']}); step skipped ({state.skipped} so far)"
    )
    if state.bad_streak >= cfg.train.max_bad_steps:
        last = load_latest(run_dir, report=False, parts=())
        kept = f"the last good checkpoint '{last.path}' is kept" if last else "no checkpoint was written yet"
        raise TimError(
            f"{state.bad_streak} consecutive training steps had non-finite loss or gradients "
            f"(up to step {state.step}); {kept}",
            "lower optim.lr, keep optim.grad_clip > 0, or check the data for NaN/Inf",
        )
