"""Bad inputs (run configs: `load_config` overrides and config files): one-line TimError rows of the table described in tests/helpers/bad_inputs.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from helpers.bad_inputs import (
    Case,
    check_case,
    tim_error,
)


def config_error(*overrides: str) -> Callable[[Path], str]:
    def trigger(tmp: Path) -> str:
        from tim.training import load_config

        return tim_error(lambda: load_config("digits", list(overrides)))

    return trigger


def config_file_error(text: str, name: str = "run.yaml", data: bytes | None = None) -> Callable[[Path], str]:
    def trigger(tmp: Path) -> str:
        from tim.training import load_config

        path = tmp / name
        path.write_bytes(text.encode() if data is None else data)
        return tim_error(lambda: load_config(path, []))

    return trigger


def missing_config_file(tmp: Path) -> str:
    from tim.training import load_config

    return tim_error(lambda: load_config(tmp / "nope.yaml", []))


# Nine levels of nine aliases: 387 million leaves once expanded (a "billion laughs" document).
_ALIAS_BOMB = (
    "\n".join(
        ["a: &a [x, x, x, x, x, x, x, x, x]"]
        + [f"{chr(98 + k)}: &{chr(98 + k)} [{', '.join([f'*{chr(97 + k)}'] * 9)}]" for k in range(8)]
    )
    + "\n"
)


CASES: list[Case] = [
    Case(
        "config-unknown-key",
        "config",
        "`optim.lrr=1e-3` (typo)",
        config_error("optim.lrr=1e-3"),
        ("unknown", "optim.lrr"),
        ("did you mean 'optim.lr'",),
    ),
    Case(
        "config-unknown-section",
        "config",
        "`bogus.key=1`",
        config_error("bogus.key=1"),
        ("unknown", "bogus"),
        ("valid keys",),
    ),
    Case(
        "config-unknown-model-field",
        "config",
        "`model.depthh=3`",
        config_error("model.depthh=3"),
        ("unknown", "model.depthh"),
        ("did you mean 'model.depth'",),
    ),
    Case(
        "config-unknown-key-in-file",
        "config",
        "YAML file with `train: {stepz: 10}`",
        config_file_error("train:\n  stepz: 10\n"),
        ("unknown", "train.stepz"),
        ("did you mean 'train.steps'",),
    ),
    Case(
        "config-wrong-type-lr",
        "config",
        "`optim.lr=abc`",
        config_error("optim.lr=abc"),
        ("optim.lr", "'abc'", "expected a number"),
        ("write optim.lr as a number",),
    ),
    Case(
        "config-wrong-type-int",
        "config",
        "`train.batch_size=2.5`",
        config_error("train.batch_size=2.5"),
        ("train.batch_size", "2.5", "expected an integer"),
        ("as an integer",),
    ),
    Case(
        "config-wrong-type-bool",
        "config",
        "`train.deterministic=maybe`",
        config_error("train.deterministic=maybe"),
        ("train.deterministic", "maybe"),
        ("true or false",),
    ),
    Case(
        "config-wrong-type-list",
        "config",
        "`optim.betas=0.9` (needs two values)",
        config_error("optim.betas=0.9"),
        ("optim.betas", "expected a list"),
        ("as a list",),
    ),
    Case(
        "config-wrong-type-in-file",
        "config",
        "YAML file with `optim: {lr: [1, 2]}`",
        config_file_error("optim:\n  lr: [1, 2]\n"),
        ("optim.lr", "expected a number"),
        ("as a number",),
    ),
    Case(
        "config-negative-lr",
        "config",
        "`optim.lr=-1e-4`",
        config_error("optim.lr=-1e-4"),
        ("optim.lr", "-0.0001", "> 0"),
        ("greater than 0",),
    ),
    Case(
        "config-negative-warmup",
        "config",
        "`optim.warmup_steps=-5`",
        config_error("optim.warmup_steps=-5"),
        ("optim.warmup_steps", "-5"),
        ("at least 0",),
    ),
    Case(
        "config-zero-steps",
        "config",
        "`train.steps=0`",
        config_error("train.steps=0"),
        ("train.steps", ">= 1"),
        ("at least 1",),
    ),
    Case(
        "config-diffusion-share-above-1",
        "config",
        "`objective.diffusion_share=1.5`",
        config_error("objective.diffusion_share=1.5"),
        ("objective.diffusion_share", "1.5", "outside"),
        ("between 0", "and 1"),
    ),
    Case(
        "config-diffusion-share-below-0",
        "config",
        "`objective.diffusion_share=-0.1`",
        config_error("objective.diffusion_share=-0.1"),
        ("objective.diffusion_share", "-0.1", "outside"),
        ("between 0",),
    ),
    Case(
        "config-shares-sum-above-1",
        "config",
        "`objective.diffusion_share=0.95` (+ consistency 0.1 > 1)",
        config_error("objective.diffusion_share=0.95"),
        ("diffusion_share", "consistency_share", "exceeds 1"),
        ("at most 1",),
    ),
    Case(
        "config-epsilon-zero",
        "config",
        "`objective.epsilon=0` (DDE step)",
        config_error("objective.epsilon=0"),
        ("objective.epsilon", "> 0"),
        ("greater than 0",),
    ),
    Case(
        "config-epsilon-negative",
        "config",
        "`objective.epsilon=-0.005`",
        config_error("objective.epsilon=-0.005"),
        ("objective.epsilon", "-0.005"),
        ("greater than 0",),
    ),
    Case(
        "config-ema-decay-1",
        "config",
        "`ema.decay=1.0`",
        config_error("ema.decay=1.0"),
        ("ema.decay", "outside"),
        ("between 0",),
    ),
    Case(
        "config-label-dropout-1",
        "config",
        "`train.label_dropout=1.0`",
        config_error("train.label_dropout=1.0"),
        ("train.label_dropout", "outside"),
        ("between 0",),
    ),
    Case(
        "config-negative-cfg",
        "config",
        "`sample.guidance_scale=-1`",
        config_error("sample.guidance_scale=-1"),
        ("sample.guidance_scale", "-1"),
        ("at least 0",),
    ),
    Case(
        "config-empty-sample-steps",
        "config",
        "`sample.steps=[]`",
        config_error("sample.steps=[]"),
        ("sample.steps", "non-empty"),
        ("sample.steps=1,2,4",),
    ),
    Case(
        "config-sample-steps-below-1",
        "config",
        "`sample.steps=0,1`",
        config_error("sample.steps=0,1"),
        ("sample.steps", ">= 1"),
        ("sample.steps=1,2,4",),
    ),
    Case(
        "config-betas-out-of-range",
        "config",
        "`optim.betas=[0.9,1.5]`",
        config_error("optim.betas=[0.9,1.5]"),
        ("optim.betas", "1.5", "[0, 1)"),
        ("optim.betas=[0.9,0.95]",),
    ),
    Case(
        "config-model-depth-zero",
        "config",
        "`model.depth=0`",
        config_error("model.depth=0"),
        ("depth=0", "below 1"),
        ("depth >= 1",),
    ),
    Case(
        "config-model-heads-zero",
        "config",
        "`model.num_heads=0`",
        config_error("model.num_heads=0"),
        ("num_heads=0", "below 1"),
        ("num_heads >= 1",),
    ),
    Case(
        "config-model-head-dim",
        "config",
        "`model.hidden_size=30` (head dim not a multiple of 4)",
        config_error("model.hidden_size=30"),
        ("hidden_size 30", "num_heads 4"),
        ("% 4 == 0",),
    ),
    Case(
        "config-bad-precision",
        "config",
        "`train.precision=fp16`",
        config_error("train.precision=fp16"),
        ("train.precision", "'fp16'", "not allowed"),
        ("'fp32', 'bf16'",),
    ),
    Case(
        "config-bad-derivative-precision",
        "config",
        "`objective.derivative_precision=fp16`",
        config_error("objective.derivative_precision=fp16"),
        ("objective.derivative_precision", "'fp16'", "not allowed"),
        ("'auto', 'fp32', 'tf32', 'mixed', 'bf16'",),
    ),
    Case(
        "config-unknown-model-preset",
        "config",
        "`model.preset=TiM-nope`",
        config_error("model.preset=TiM-nope"),
        ("model.preset", "TiM-nope", "unknown"),
        ("use one of", "TiM-digits"),
    ),
    Case(
        "config-unknown-path",
        "config",
        "`path.name=cosine`",
        config_error("path.name=cosine"),
        ("path.name", "cosine", "unknown"),
        ("use one of", "linear"),
    ),
    Case(
        "config-unknown-objective",
        "config",
        "`objective.name=ddpm`",
        config_error("objective.name=ddpm"),
        ("objective.name", "ddpm"),
        ("use one of", "'tim'"),
    ),
    Case(
        "config-unknown-dataset",
        "config",
        "`data.name=cifar`",
        config_error("data.name=cifar"),
        ("data.name", "cifar"),
        ("use one of", "digits"),
    ),
    Case(
        "config-bad-override-syntax",
        "config",
        "override `optim.lr` without `=value`",
        config_error("optim.lr"),
        ("optim.lr", "not of the form"),
        ("optim.lr=3e-4",),
    ),
    Case(
        "config-invalid-yaml",
        "config",
        "YAML file with a syntax error",
        config_file_error("train: [1, 2\n"),
        ("not valid YAML",),
        ("fix the YAML syntax",),
    ),
    Case(
        "config-not-a-mapping",
        "config",
        "YAML file holding a list",
        config_file_error("- 1\n- 2\n"),
        ("must be a mapping",),
        ("sections like 'train:'",),
    ),
    Case(
        "config-binary-file",
        "config",
        "`--config model.safetensors` (a binary file)",
        config_file_error("", name="model.safetensors", data=b"\x08\x00\x00\x00\x00\x00\x00\x00{\xfc\xff}"),
        ("model.safetensors", "not a text file"),
        ("YAML or JSON config file",),
    ),
    Case(
        "config-missing-file",
        "config",
        "`--config nope.yaml` that does not exist",
        missing_config_file,
        ("nope.yaml", "does not exist"),
        ("pass the path",),
    ),
    Case(
        "cfg-yaml-alias-bomb",
        "config",
        "a 9-line YAML alias bomb (387 million nodes once expanded)",
        config_file_error(_ALIAS_BOMB),
        ("run.yaml", "expands too far through its YAML aliases", "10000 nodes"),
        ("without nested aliases",),
    ),
    Case(
        "cfg-yaml-duplicate-key",
        "config",
        "YAML file with `lr:` twice under `optim:`",
        config_file_error("optim:\n  lr: 0.001\n  lr: 0.1\n"),
        ("key 'lr' twice", "line 3"),
        ("keep one",),
    ),
    Case(
        "cfg-json-duplicate-key",
        "config",
        "JSON file with `steps` twice in one object",
        config_file_error('{"train": {"steps": 5, "steps": 6}}', name="run.json"),
        ("key 'steps' twice",),
        ("keep one",),
    ),
    Case(
        "cfg-empty-file",
        "config",
        "an empty YAML file (or only comments)",
        config_file_error("# nothing here\n"),
        ("run.yaml", "is empty"),
        ("write at least one section", "--config digits"),
    ),
    Case(
        "cfg-seed-too-large",
        "config",
        "`train.seed=2**64` (more than 64 bits)",
        config_error(f"train.seed={2**64}"),
        ("train.seed = 18446744073709551616", "outside [0, 9223372036854775807]"),
        ("set a value between",),
    ),
    Case(
        "cfg-guidance-interval-above-1",
        "config",
        "`sample.guidance_interval=[0,1.5]`",
        config_error("sample.guidance_interval=[0,1.5]"),
        ("guidance_interval", "fractions of t_max"),
        ("0 <= low <= high <= 1",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_gets_one_line_message(case: Case, tmp_path: Path) -> None:
    check_case(case, tmp_path)
