"""TiM vs flow matching on a 2-D toy: the paper's central claim in miniature (arXiv 2509.04394, Table 4).

Trains the same small TiMMLP from the same initialisation and for the same number of steps with
three objectives, then samples each at 1, 2, 4, ..., 64 steps (TiM with its transition sampler,
flow matching with Euler, its natural r = t sampler) and reports the energy distance to fresh data
(lower is better; "floor" is data vs. data). Prints JSON and a table and saves a scatter figure.

* ``TiM``: the transition objective (DDE, (t, r) shares, tan+sqrt time weight) with a plain MSE,
  i.e. without the cosine direction term and without the per-sample adaptive normalisation;
* ``TiM-paper``: the full published recipe (cosine term + adaptive normalisation, the library
  default). Both extras are designed for high-dimensional latents: on 2-D vectors the cosine's
  minimiser is not the conditional mean and 1/(sg(L_i) + c) with L_i a mean over only 2 numbers
  turns the regression into a mode-seeking log-loss, so this variant is much worse here (measured);
* ``FM``: flow matching (every row r = t, plain MSE).

    python scripts/toy_2d_comparison.py                    # a few minutes on 2 CPU cores
    python scripts/toy_2d_comparison.py --train-steps 300  # smoke run
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path as FilePath

import torch

from tim.objective import FlowMatchingLoss, TransitionLoss
from tim.samplers import sample

STEP_COUNTS = (1, 2, 4, 8, 16, 32, 64)


def toy_sampler(name: str):
    """The tim.data toy sampler ``(n, generator) -> (n, 2)``."""
    from tim.data import toy

    return getattr(toy, f"sample_{name}")


def build_network(hidden: int, depth: int, seed: int) -> torch.nn.Module:
    from tim.models import MLPConfig, TiMMLP

    torch.manual_seed(seed)  # same initial weights for both objectives (script-level, not library)
    return TiMMLP(MLPConfig(dim=2, hidden_size=hidden, depth=depth))


def train(
    model: torch.nn.Module, objective, data_fn, *, steps: int, batch: int, lr: float, seed: int
) -> float:
    """Plain AdamW loop; returns wall time in seconds."""
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=steps, eta_min=lr * 0.05)
    data_gen, loss_gen = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    start = time.perf_counter()
    for _ in range(steps):
        out = objective(model, data_fn(batch, data_gen), generator=loss_gen)
        if not torch.isfinite(out.loss):
            raise RuntimeError("non-finite loss during the toy run")
        optimiser.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        schedule.step()
    return time.perf_counter() - start


def evaluate(
    model: torch.nn.Module, method: str, data_fn, *, n: int, seed: int
) -> tuple[dict[int, float], dict[int, torch.Tensor]]:
    from tim.evaluation.metrics import energy_distance

    model.eval()
    reference = data_fn(n, torch.Generator().manual_seed(seed + 100))
    noise = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed + 200))
    scores, samples = {}, {}
    for steps in STEP_COUNTS:
        x = sample(model, noise, steps=steps, method=method).x
        scores[steps], samples[steps] = energy_distance(x, reference), x
    return scores, samples


def save_figure(samples: dict[str, dict[int, torch.Tensor]], data: torch.Tensor, file: FilePath) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = (1, 2, 4, 16, 64)
    fig, axes = plt.subplots(
        len(samples), len(shown) + 1, figsize=(2.6 * (len(shown) + 1), 2.7 * len(samples))
    )
    for row, name in enumerate(samples):
        for col, steps in enumerate(shown):
            ax = axes[row, col]
            points = samples[name][steps].numpy()
            ax.scatter(points[:, 0], points[:, 1], s=1.0, alpha=0.5, color=f"C{row}")
            ax.set_title(f"{name}: {steps} step{'s' if steps > 1 else ''}", fontsize=9)
        axes[row, -1].scatter(data[:, 0], data[:, 1], s=1.0, alpha=0.5, color="k")
        axes[row, -1].set_title("data", fontsize=9)
    for ax in axes.flat:
        (
            ax.set_xlim(-2.5, 2.5),
            ax.set_ylim(-2.5, 2.5),
            ax.set_aspect("equal"),
            ax.set_xticks([]),
            ax.set_yticks([]),
        )
    fig.tight_layout()
    fig.savefig(file, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toy", default="checkerboard", help="checkerboard | 8gaussians | moons | spirals")
    parser.add_argument("--train-steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--eval-samples", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="outputs/toy_2d_comparison")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out_dir = FilePath(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    data_fn = toy_sampler(args.toy)

    initial = build_network(args.hidden, args.depth, args.seed)
    runs = {
        "TiM": (TransitionLoss(direction_loss=False, adaptive=False), "transition"),
        "TiM-paper": (TransitionLoss(), "transition"),
        "FM": (FlowMatchingLoss(), "euler"),
    }
    results, all_samples = {}, {}
    for name, (objective, method) in runs.items():
        model = copy.deepcopy(initial)
        seconds = train(
            model, objective, data_fn, steps=args.train_steps, batch=args.batch, lr=args.lr, seed=args.seed
        )
        scores, all_samples[name] = evaluate(model, method, data_fn, n=args.eval_samples, seed=args.seed)
        print(
            f"{name}: trained in {seconds:.0f} s, energy distance at 1 step {scores[1]:.4f}",
            file=sys.stderr,
            flush=True,
        )
        results[name] = {"sampler": method, "train_seconds": round(seconds, 1), "energy_distance": scores}

    from tim.evaluation.metrics import energy_distance

    data = data_fn(args.eval_samples, torch.Generator().manual_seed(args.seed + 300))
    floor = energy_distance(data, data_fn(args.eval_samples, torch.Generator().manual_seed(args.seed + 100)))
    report = {
        "toy": args.toy,
        "train_steps": args.train_steps,
        "batch": args.batch,
        "floor_data_vs_data": floor,
        **results,
    }
    save_figure(all_samples, data, out_dir / "scatter.png")
    (out_dir / "results.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report))
    print(f"\nenergy distance to fresh {args.toy} data (lower is better; data vs data = {floor:.4f})")
    print("steps | " + " | ".join(f"{name:>9}" for name in runs))
    for steps in STEP_COUNTS:
        print(
            f"{steps:>5} | " + " | ".join(f"{results[name]['energy_distance'][steps]:9.4f}" for name in runs)
        )
    print(f"figure: {out_dir / 'scatter.png'}")


if __name__ == "__main__":
    main()
