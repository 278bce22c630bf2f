"""Summarise an A/B of `tim bench geneval` runs: mean ± std over seeds per variant, and paired differences.

Each variant is a set of output folders of ``tim bench geneval`` (one per seed, each with its
``geneval.json``), given as ``NAME=GLOB``::

    python scripts/geneval_ab.py fp32='/work/ab/fp32-s*' mixed='/work/ab/mixed-s*' bf16='/work/ab/bf16-s*'

Prints Markdown: for the seen and held-out prompts, without and with CFG, the overall score at each
sampling step count (mean ± sample std over the seeds found), then each variant minus the first,
paired by seed (mean ± std of the per-seed differences). Only seeds present in every variant are
paired.
"""

from __future__ import annotations

import glob
import json
import statistics
import sys
from pathlib import Path


def load(pattern: str) -> dict[int, dict]:
    """``{seed: results of the "tim" method}`` of every finished run matching ``pattern``."""
    runs = {}
    for folder in sorted(glob.glob(pattern)):
        file = Path(folder) / "geneval.json"
        if file.is_file():
            report = json.loads(file.read_text())
            runs[int(report["config"]["seed"])] = report["results"]["tim"]
    return runs


def cell(values: list[float]) -> str:
    """``mean ± std`` (std over seeds; just the value for one seed)."""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def table(variants: dict[str, dict[int, dict]], split: str, scale: str, paired: bool) -> list[str]:
    """One Markdown table: a row per variant (or per difference), a column per step count."""
    first = next(iter(variants.values()))
    any_seed = next(iter(first.values()))
    if split not in any_seed or scale not in any_seed[split]:
        return []
    steps = list(any_seed[split][scale])
    lines = ["| " + " | ".join(["variant (seeds)", *steps]) + " |", "|---" * (len(steps) + 1) + "|"]
    names = list(variants)
    common = sorted(set.intersection(*(set(runs) for runs in variants.values())))
    for name in names[1:] if paired else names:
        runs = variants[name]
        seeds = common if paired else sorted(runs)
        row = []
        for k in steps:
            values = [runs[s][split][scale][k]["overall"] for s in seeds]
            if paired:
                values = [
                    v - variants[names[0]][s][split][scale][k]["overall"]
                    for v, s in zip(values, seeds, strict=True)
                ]
            row.append(cell(values))
        label = f"{name} − {names[0]} ({len(seeds)})" if paired else f"{name} ({len(seeds)})"
        lines.append("| " + " | ".join([label, *row]) + " |")
    return lines


def main() -> None:
    variants = {}
    for argument in sys.argv[1:]:
        name, _, pattern = argument.partition("=")
        variants[name] = load(pattern)
        if not variants[name]:
            raise SystemExit(f"no finished run matches {pattern}")
    for split in ("seen", "heldout"):
        for scale in ("1.0", "2.0"):
            for paired in (False, True):
                lines = table(variants, split, scale, paired)
                if lines:
                    what = "paired differences" if paired else "overall score"
                    print(f"\n{split} prompts, CFG {scale}, {what}:\n")
                    print("\n".join(lines))


if __name__ == "__main__":
    main()
