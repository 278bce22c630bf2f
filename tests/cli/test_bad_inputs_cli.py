"""Bad inputs (the other commands: `tim demo`, `tim bench`, `tim train`, `tim autoencoder`): one-line TimError rows of the table described in tests/helpers/bad_inputs.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.bad_inputs import (
    Case,
    check_case,
    cli,
    cli_error,
)


def _bench_out_is_file(tmp: Path) -> str:
    (tmp / "report.json").write_text("{}")
    return cli_error(["bench", "cost", "--out", str(tmp / "report.json")])


CASES: list[Case] = [
    Case("cli-unknown-command", "command line", "`tim smaple`", cli("smaple"), ("smaple",), ("--help",)),
    Case(
        "cli-demo-out-exists",
        "command line",
        "`tim demo --out DIR` where DIR holds earlier files",
        cli("demo", "--quick", "--out", "{out}", out="non-empty"),
        ("--out", "already exists", "not empty"),
        ("another --out", "--overwrite"),
    ),
    Case(
        "cli-demo-steps-zero",
        "command line",
        "`tim demo --steps 0`",
        cli("demo", "--steps", "0", "--out", "{out}"),
        ("--steps", "0", "< 1"),
        ("at least 1",),
    ),
    Case(
        "cli-bench-negative-cfg",
        "command line",
        "`tim bench quality --cfg -1`",
        cli("bench", "quality", "--cfg=-1", "--out", "{out}"),
        ("--cfg", "-1", "negative"),
        (">= 0",),
    ),
    Case(
        "cli-bench-steps-zero",
        "command line",
        "`tim bench quality --sampling-steps 0,1`",
        cli("bench", "quality", "--sampling-steps", "0,1", "--out", "{out}"),
        ("--sampling-steps", "0", "below 1"),
        ("at least 1",),
    ),
    Case(
        "cli-train-bad-override",
        "command line",
        "`tim train --config digits optim.lr=-1`",
        cli("train", "--config", "digits", "--out", "{out}", "optim.lr=-1"),
        ("optim.lr", "-1", "> 0"),
        ("greater than 0",),
    ),
    Case(
        "cli-train-unknown-key",
        "command line",
        "`tim train --config digits train.stepz=3`",
        cli("train", "--config", "digits", "--out", "{out}", "train.stepz=3"),
        ("unknown", "train.stepz"),
        ("did you mean 'train.steps'",),
    ),
    Case(
        "cli-train-missing-config",
        "command line",
        "`tim train --config nope.yaml`",
        cli("train", "--config", "nope.yaml", "--out", "{out}"),
        ("nope.yaml", "does not exist"),
        ("YAML or JSON config file",),
    ),
    Case(
        "cli-autoencoder-data-missing",
        "command line",
        "`tim autoencoder train --data no/such/folder`",
        cli("autoencoder", "train", "--data", "no/such/folder", "--out", "{out}"),
        ("'no/such/folder'", "neither a folder nor one of scenes, shapes"),
        ("pass an image folder",),
    ),
    Case(
        "cli-autoencoder-out-not-empty",
        "command line",
        "`tim autoencoder train --out` a non-empty folder",
        cli("autoencoder", "train", "--data", "shapes", "--out", "{out}", out="non-empty"),
        ("is not empty",),
        ("--overwrite",),
    ),
    Case(
        "cli-autoencoder-one-block",
        "command line",
        "`tim autoencoder train --widths 16` (no down-sampling)",
        cli("autoencoder", "train", "--data", "shapes", "--widths", "16", "--out", "{out}"),
        ("--widths '16'", "would not down-sample"),
        ("at least two widths",),
    ),
    Case(
        "cli-demo-latent-bad-override",
        "command line",
        "`tim demo --out DIR latent autoencoder.stepz=3`",
        cli("demo", "--out", "{out}", "latent", "autoencoder.stepz=3"),
        ("'autoencoder.stepz=3'", "known field"),
        ("autoencoder.steps",),
    ),
    Case(
        "cli-autoencoder-huge-image",
        "command line",
        "`tim autoencoder train --image-size 100000`",
        cli("autoencoder", "train", "--data", "shapes", "--image-size", "100000", "--out", "{out}"),
        ("image size 100000", "needs at least", "is free"),
        ("lower --image-size",),
    ),
    Case(
        "cli-bench-out-is-file",
        "command line",
        "`tim bench cost --out FILE` where FILE is an existing file",
        _bench_out_is_file,
        ("report.json", "is a file, not a folder"),
        ("pass a folder path",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_gets_one_line_message(case: Case, tmp_path: Path) -> None:
    check_case(case, tmp_path)
