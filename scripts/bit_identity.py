"""Prove that a refactoring changed no number: run the same short jobs on two source trees and compare.

The jobs (fixed seeds, one thread, CPU):

- ``digits_train``: ``tim train`` on the bundled digits for a few steps (the EMA and raw weights);
- ``digits_sample``: ``tim sample`` on that run with 1 and 4 steps, guided (the ``.npz`` files);
- ``pipeline``: ``TiMPipeline.from_run(...)(class_labels=..., steps=4)`` (the returned array);
- ``t2i_train`` / ``t2i_sample``: a text-to-image run on the synthetic scenes and ``tim sample
  --prompt`` on it with 1 and 2 steps (needs the ``[text]`` extra).

Every array in every output file must be bit-identical between the trees. Usage::

    python scripts/bit_identity.py --reference 18b644f          # the commit before the refactor
    python scripts/bit_identity.py --reference 18b644f --jobs digits_train,digits_sample

Prints one JSON object: per job, ``identical`` and the largest absolute difference. Exit status 1
when any job differs. The reference tree is a ``git worktree`` of the given commit, removed after.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

PIPELINE_SNIPPET = """
import sys, numpy as np
from tim.pipeline import TiMPipeline
pipe = TiMPipeline.from_run(sys.argv[1])
out = pipe(class_labels=[0, 3, 7, 9], steps=4, guidance_scale=1.5, seed=5, output_type="np")
np.savez(sys.argv[2], images=out.images)
"""


def jobs(tim: list[str], python: list[str], work: Path) -> dict[str, list[list[str]]]:
    """The commands of each job, run in order inside ``work``."""
    digits, t2i = str(work / "digits"), str(work / "t2i")
    return {
        "digits_train": [
            [
                *tim,
                "train",
                "--config",
                "configs/digits.yaml",
                "--out",
                digits,
                "train.steps=40",
                "train.log_every=10",
                "train.checkpoint_every=40",
                "sample.steps=[1,2]",
                "sample.num=8",
            ],
        ],
        "digits_sample": [
            [
                *tim,
                "sample",
                "--checkpoint",
                digits,
                "--steps",
                "1,4",
                "--per-class",
                "2",
                "--cfg",
                "1.5",
                "--seed",
                "3",
                "--out",
                str(work / "digits_sample"),
                "--no-progress",
            ],
        ],
        "pipeline": [[*python, "-c", PIPELINE_SNIPPET, digits, str(work / "pipeline.npz")]],
        "t2i_train": [
            [
                *tim,
                "train",
                "--config",
                "configs/scenes_t2i.yaml",
                "--out",
                t2i,
                "train.steps=6",
                "train.batch_size=8",
                "train.log_every=2",
                "train.checkpoint_every=6",
                "sample.steps=[1]",
                "sample.num=4",
                "train.time_limit=0",
            ],
        ],
        "t2i_sample": [
            [
                *tim,
                "sample",
                "--checkpoint",
                t2i,
                "--steps",
                "1,2",
                "--prompt",
                "two red circles",
                "--prompt",
                "a blue square",
                "--per-prompt",
                "2",
                "--cfg",
                "2",
                "--seed",
                "1",
                "--out",
                str(work / "t2i_sample"),
                "--no-progress",
            ],
        ],
    }


def outputs(work: Path, job: str) -> dict[str, dict[str, np.ndarray]]:
    """Every array a job wrote (``.npz``, ``.safetensors``; a PNG as its bytes), by file (relative path)."""
    found: dict[str, dict[str, np.ndarray]] = {}
    base = {
        "digits_train": "digits",
        "t2i_train": "t2i",
        "digits_sample": "digits_sample",
        "t2i_sample": "t2i_sample",
        "pipeline": "pipeline.npz",
    }[job]
    target = work / base
    files = [target] if target.is_file() else sorted(target.rglob("*"))
    for file in files:
        name = str(file.relative_to(work))
        if file.suffix == ".npz":
            with np.load(file, allow_pickle=False) as data:
                found[name] = {key: data[key] for key in data.files}
        elif file.suffix == ".safetensors":
            from safetensors.numpy import load_file

            found[name] = dict(load_file(str(file)))
        elif file.suffix == ".png":
            found[name] = {"png": np.frombuffer(file.read_bytes(), dtype=np.uint8)}
    return found


def run_tree(src: Path, work: Path, names: list[str]) -> dict[str, str]:
    """Run the jobs with ``src`` first on the import path; return each job's error output, if any."""
    env = {
        **os.environ,
        "PYTHONPATH": str(src),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }
    python = [sys.executable]
    check = subprocess.run(
        [*python, "-c", "import tim; print(tim.__file__)"],
        env=env,
        text=True,
        capture_output=True,
        check=True,
    )
    if not check.stdout.strip().startswith(str(src)):
        raise SystemExit(f"tim imported from {check.stdout.strip()}, not {src}")
    tim = [*python, "-m", "tim.cli.main"]
    failures = {}
    for name in names:
        for command in jobs(tim, python, work)[name]:
            done = subprocess.run(command, env=env, cwd=ROOT, text=True, capture_output=True)
            if done.returncode != 0:
                failures[name] = done.stderr[-2000:]
    return failures


def compare(a: dict[str, dict[str, np.ndarray]], b: dict[str, dict[str, np.ndarray]]) -> dict[str, Any]:
    """Bitwise comparison of two jobs' arrays."""
    if sorted(a) != sorted(b):
        return {"identical": False, "why": f"files differ: {sorted(set(a) ^ set(b))}"}
    worst, arrays = 0.0, 0
    for file in a:
        if sorted(a[file]) != sorted(b[file]):
            return {"identical": False, "why": f"{file}: keys differ"}
        for key, left in a[file].items():
            right = b[file][key]
            arrays += 1
            if left.dtype != right.dtype or left.shape != right.shape:
                return {"identical": False, "why": f"{file}:{key}: dtype or shape differs"}
            if left.dtype.kind in "fc":
                if left.tobytes() != right.tobytes():
                    worst = max(worst, float(np.nanmax(np.abs(left.astype(np.float64) - right))))
                    if worst == 0.0:
                        worst = float("nan")  # differs only in NaN payloads or signed zeros
            elif not np.array_equal(left, right):
                return {"identical": False, "why": f"{file}:{key}: values differ"}
    return {"identical": worst == 0.0, "max_abs_diff": worst, "files": len(a), "arrays": arrays}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference", required=True, help="commit of the tree before the change")
    parser.add_argument("--jobs", default=",".join(jobs([], [], Path()).keys()))
    parser.add_argument("--keep", type=Path, default=None, help="keep the outputs in this folder")
    args = parser.parse_args()
    names = args.jobs.split(",")
    order = ["digits_train", "digits_sample", "pipeline", "t2i_train", "t2i_sample"]
    names = [
        n for n in order if n in names or (n.endswith("_train") and n.replace("train", "sample") in names)
    ]
    scratch = Path(tempfile.mkdtemp(prefix="tim-bit-identity-"))
    keep = args.keep or scratch
    reference = scratch / "reference-tree"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(reference), args.reference],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    try:
        failed = {}
        for label, src in (("before", reference / "src"), ("after", ROOT / "src")):
            (keep / label).mkdir(parents=True, exist_ok=True)
            failed.update({f"{label}:{k}": v for k, v in run_tree(src, keep / label, names).items()})
        report: dict[str, Any] = {"reference": args.reference, "failed": failed, "jobs": {}}
        for name in names:
            report["jobs"][name] = compare(outputs(keep / "before", name), outputs(keep / "after", name))
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(reference)], cwd=ROOT, check=False)
        if args.keep is None:
            shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(report, indent=2))
    ok = not failed and all(job["identical"] for job in report["jobs"].values())
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
