"""Why does the scenes text-to-image model not follow its prompts? Two measurements and a picture.

``probe``: do the caption features carry what the judge checks? A logistic-regression probe from
all-MiniLM-L6-v2 features of every training caption (714) to the first / second object's shape and
colour, the object count and the relation, scored on the training captions and on the 285 held-out
ones (colour-shape pairs never seen in training). Three feature views: the masked mean of the token
features (what ``model.pooled_text`` feeds the network), the [CLS] token, and all tokens
concatenated (what cross-attention can reach).

``context RUN``: does a trained run use its caption? GenEval in miniature on the same seen /
held-out prompt sets as ``tim demo t2i`` (``eval_specs``) at 1 and 4 steps, from the same noise,
with the real caption features, with the features of another prompt (a fixed permutation of the
batch: chance level for the prompt, the same image statistics), and with CFG 2 and 3.

``derivative RUN``: how far TiM's DDE (central difference, half-width eps) is from the exact
derivative (forward-mode JVP) on a trained run's network: for scenes x, noise z and fixed pairs
(t, r), the median over images of (t - r) |DDE - JVP| / |v|, i.e. the error the finite difference
puts into the target v - (t - r) dF/dt, relative to the target's scale. At t = t_max the stencil is
one-sided (first-order), elsewhere central (second-order).

``montage RUN``: what a run draws: the montage of ``tim demo t2i`` (its twelve grid prompts, two of
them held out; the same noise for every step count) for any trained run, e.g. a ``tim bench
geneval`` run trained longer than the demo can.

Usage:
    python scripts/t2i_diagnose.py probe
    python scripts/t2i_diagnose.py context outputs/demo_t2i/run [--per-category 16] [--json out.json]
    python scripts/t2i_diagnose.py derivative RUN [--eps 0.005,0.002,0.001,0.0005] [--json out.json]
    python scripts/t2i_diagnose.py montage RUN --steps 1,8 [--columns 4] [--cfg 2] --out montage.png
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

PROBE_C = 10.0  # inverse L2 strength of the probe: weak regularisation, the task is linear or not
PROBE_ITERATIONS = 2000  # lbfgs iterations; enough to converge on 714 captions


def _labels(spec) -> dict[str, object]:  # noqa: ANN001 - a tim.data.scenes.SceneSpec
    second = spec.objects[1] if len(spec.objects) > 1 else ("none", "none")
    return {
        "shape_0": spec.objects[0][0],
        "color_0": spec.objects[0][1] or "none",
        "shape_1": second[0],
        "color_1": second[1] or "none",
        "count": spec.num_objects,
        "relation": spec.relation or "none",
    }


def _views(encoder, captions: list[str]) -> dict[str, torch.Tensor]:  # noqa: ANN001 - a TextEncoder
    out = encoder(captions)
    context, mask = out["context"], out["context_mask"].to(torch.float32)  # (N, M, D), (N, M)
    mean = (context * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    return {"mean": mean, "cls": context[:, 0], "tokens": context.reshape(len(captions), -1)}


def probe(max_length: int) -> dict[str, dict[str, list[float]]]:
    """Train / held-out accuracy of a linear probe per label and feature view."""
    from sklearn.linear_model import LogisticRegression

    from tim.data.scenes import scene_specs
    from tim.text import TextEncoder

    encoder = TextEncoder("minilm", max_length=max_length)
    train, heldout = scene_specs("train"), scene_specs("heldout")
    views_train = _views(encoder, [s.caption for s in train])
    views_held = _views(encoder, [s.caption for s in heldout])
    labels_train, labels_held = [_labels(s) for s in train], [_labels(s) for s in heldout]
    results: dict[str, dict[str, list[float]]] = {}
    for view in views_train:
        results[view] = {}
        for name in labels_train[0]:
            y_train = [str(row[name]) for row in labels_train]
            y_held = [str(row[name]) for row in labels_held]
            clf = LogisticRegression(C=PROBE_C, max_iter=PROBE_ITERATIONS)
            clf.fit(views_train[view].numpy(), y_train)
            results[view][name] = [
                round(float(clf.score(views_train[view].numpy(), y_train)), 3),
                round(float(clf.score(views_held[view].numpy(), y_held)), 3),
            ]
        print(view, "(train, held-out accuracy):", results[view], flush=True)
    return results


def context(run: Path, per_category: int) -> dict[str, dict[str, float]]:
    """GenEval in miniature with real / permuted caption features and with CFG, 1 and 4 steps."""
    from tim.evaluation.geneval import score_images
    from tim.experiments.geneval import eval_specs, generate
    from tim.text import TextEncoder
    from tim.training import load_run

    model, cfg = load_run(run, which="ema")
    model.eval()
    encoder = TextEncoder(cfg.data.text_encoder, max_length=cfg.data.max_text_length)
    c = model.config
    results: dict[str, dict[str, float]] = {}
    for split, per in (("seen", per_category), ("heldout", max(1, per_category // 2))):
        specs = eval_specs(split, per)
        cond = encoder([s.caption for s in specs])
        permutation = torch.randperm(len(specs), generator=torch.Generator().manual_seed(1))
        permuted = {key: value[permutation] for key, value in cond.items()}
        shape = (len(specs), c.in_channels, c.input_size, c.input_size)
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        variants = [("real", cond, 1.0), ("cfg2", cond, 2.0), ("cfg3", cond, 3.0)]
        if split == "seen":  # held-out prompts permuted among themselves say nothing more
            variants.insert(1, ("permuted", permuted, 1.0))
        for steps in (1, 4):
            for name, condition, scale in variants:
                images, _ = generate(model, condition, steps, noise, guidance_scale=scale)
                key = f"{split} {steps} step(s) {name}"
                results[key] = {k: round(v, 3) for k, v in score_images(images, specs).items()}
                print(key, results[key], flush=True)
    return results


DERIVATIVE_TIMES = (0.3, 0.6, 0.8, 0.9, 0.95, 0.98, 1.0)  # t of the pairs; r = 0 and r = t / 2


def derivative(run: Path, epsilons: list[float], num: int) -> dict[str, dict[str, float]]:
    """Median target error (t - r)|DDE - JVP|/|v| of ``num`` training scenes, per (r, t) and eps."""
    from tim.data.images import images_to_unit_range
    from tim.data.scenes import render_scenes
    from tim.objective import dde_derivative, jvp_derivative
    from tim.text import TextEncoder
    from tim.training import load_run
    from tim.training.config import build_path_from_config

    model, cfg = load_run(run, which="ema")
    model.eval().set_attention_backend("math")  # forward-mode AD needs the math attention kernel
    encoder = TextEncoder(cfg.data.text_encoder, max_length=cfg.data.max_text_length)
    images, captions, _ = render_scenes(num, seed=123, size=model.config.input_size)
    x = images_to_unit_range(images).permute(0, 3, 1, 2)
    cond, path = encoder(captions), build_path_from_config(cfg)
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    v_norm = (z - x).flatten(1).norm(dim=1)
    results: dict[str, dict[str, float]] = {}
    for fraction, label in ((0.0, "r=0"), (0.5, "r=t/2")):  # r = fraction * t
        for t_value in DERIVATIVE_TIMES:
            t = torch.full((num,), t_value)
            r = fraction * t
            exact = jvp_derivative(model, path, x, z, t, r, cond)
            row = {"|dF/dt| / |v|": round((exact.flatten(1).norm(dim=1) / v_norm).median().item(), 3)}
            for eps in epsilons:
                dde = dde_derivative(model, path, x, z, t, r, cond, epsilon=eps)
                error = (t - r) * (dde - exact).flatten(1).norm(dim=1) / v_norm
                row[f"eps={eps:g}"] = round(error.median().item(), 5)
            results[f"{label} t={t_value:g}"] = row
            print(f"{label} t={t_value:g}", row, flush=True)
    return results


def montage(run: Path, steps_list: list[int], columns: int, scale: float, out: Path) -> dict[str, float]:
    """The demo's labelled montage (its grid prompts, the same noise per step count) for any run."""
    from tim.experiments.geneval import generate
    from tim.experiments.t2i import GRID_PROMPTS, grid_labels
    from tim.experiments.t2i import montage as draw_montage
    from tim.io import save_png
    from tim.text import TextEncoder
    from tim.training import load_run

    model, cfg = load_run(run, which="ema")
    model.eval()
    encoder = TextEncoder(cfg.data.text_encoder, max_length=cfg.data.max_text_length)
    prompts = [p for p in GRID_PROMPTS for _ in range(columns)]
    cond, c = encoder(prompts), model.config
    noise = torch.randn(
        (len(prompts), c.in_channels, c.input_size, c.input_size), generator=torch.Generator().manual_seed(0)
    )
    grids = {steps: generate(model, cond, steps, noise, guidance_scale=scale)[0] for steps in steps_list}
    image = draw_montage({"grids": grids}, grid_labels(GRID_PROMPTS), columns, steps_list, shown=columns)
    save_png(out, image)  # never a half-written file
    print(f"wrote {out}", flush=True)
    return {"prompts": len(GRID_PROMPTS), "columns": columns, "cfg": scale}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("probe", help="linear probe of the caption features")
    p.add_argument("--max-length", type=int, default=12, help="caption tokens (the demo's 12)")
    p.add_argument("--json", type=Path, help="also write the results here")
    c = sub.add_parser("context", help="real vs permuted captions and CFG on a trained run")
    c.add_argument("run", type=Path)
    c.add_argument("--per-category", type=int, default=16, help="seen prompts per category (held-out: half)")
    c.add_argument("--json", type=Path, help="also write the results here")
    d = sub.add_parser("derivative", help="DDE vs the exact JVP derivative on a trained run")
    d.add_argument("run", type=Path)
    d.add_argument("--eps", default="0.005,0.002,0.001,0.0005", help="comma-separated DDE half-widths")
    d.add_argument("--num", type=int, default=48, help="scenes (images) per pair")
    d.add_argument("--json", type=Path, help="also write the results here")
    m = sub.add_parser("montage", help="the demo's labelled montage for a trained run")
    m.add_argument("run", type=Path)
    m.add_argument("--steps", default="1,8", help="comma-separated step counts")
    m.add_argument("--columns", type=int, default=4, help="samples per prompt and step count")
    m.add_argument("--cfg", type=float, default=1.0, help="CFG scale (1 = none)")
    m.add_argument("--out", type=Path, required=True, help="the PNG to write")
    m.add_argument("--json", type=Path, help="also write the settings here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # a shared machine; the timings below are for one thread
    started = time.perf_counter()
    if args.command == "probe":
        results = probe(args.max_length)
    elif args.command == "context":
        results = context(args.run, args.per_category)
    elif args.command == "derivative":
        try:
            epsilons = [float(value) for value in args.eps.split(",")]
        except ValueError:
            print(
                f"error: --eps {args.eps!r} is not a comma-separated list of numbers; e.g. 0.005,0.0005",
                file=sys.stderr,
            )
            return 2
        if not epsilons or min(epsilons) <= 0 or args.num < 1:
            print(
                "error: --eps needs positive half-widths and --num at least 1; e.g. --eps 0.005,0.0005",
                file=sys.stderr,
            )
            return 2
        results = derivative(args.run, epsilons, args.num)
    else:
        from tim.cli.sample import parse_steps
        from tim.errors import TimError

        try:
            steps_list = parse_steps(args.steps)
        except TimError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        results = montage(args.run, steps_list, args.columns, args.cfg, args.out)
    print(f"{time.perf_counter() - started:.0f} s", flush=True)
    if args.json:
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1))
        tmp.replace(args.json)  # never a half-written file
    return 0


if __name__ == "__main__":
    sys.exit(main())
