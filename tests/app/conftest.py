"""Fixtures for the app tests: tiny class- and text-conditional pipelines (in memory, and a pipeline folder)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# A 1-block, 32-wide TiM on 8x8x1 digits (2x2 patches, so sizes are multiples of 2).
TINY = dict(patch_size=2, hidden_size=32, depth=1, num_heads=2, modulation_rank=8, encoder_depth=1)
CLASS_NAMES = [f"digit {i}" for i in range(10)]


def make_tiny_pipeline():
    """A randomly initialised tiny TiM whose output depends on x_t, t and r.

    adaLN-Zero makes a fresh TiM output exactly 0 (every step count would then return the noise),
    so all weights get a small random perturbation: 1 and 8 steps must give different images.
    """
    from tim.generation import SamplingRecipe, TiMPipeline
    from tim.models import build_model

    torch.manual_seed(0)
    model = build_model("TiM-digits", **TINY)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    recipe = SamplingRecipe(steps=4, height=8, width=8, class_names=CLASS_NAMES)
    return TiMPipeline(model.eval(), recipe)


@pytest.fixture(scope="session")
def tiny_pipe():
    """The tiny pipeline, in memory."""
    return make_tiny_pipeline()


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory: pytest.TempPathFactory, tiny_pipe) -> Path:
    """The tiny pipeline saved as a pipeline folder (what `tim app --checkpoint` loads)."""
    folder = tmp_path_factory.mktemp("app") / "pipeline"
    tiny_pipe.save_pretrained(folder)
    return folder


class LetterEncoder:
    """A stand-in text encoder: features from the letters of each prompt (no model files needed)."""

    dim, max_length = 12, 5

    def __call__(self, prompts):
        context = torch.zeros(len(prompts), self.max_length, self.dim)
        mask = torch.zeros(len(prompts), self.max_length, dtype=torch.bool)
        for i, prompt in enumerate(prompts):
            for j, letter in enumerate(prompt[: self.max_length]):
                context[i, j], mask[i, j] = torch.linspace(-1, 1, self.dim) * (ord(letter) % 7) / 7, True
        return {"context": context, "context_mask": mask}


@pytest.fixture(scope="session")
def text_pipe():
    """A tiny pixel-space text-to-image TiM with :class:`LetterEncoder` as its text encoder."""
    from tim.generation import SamplingRecipe, TiMPipeline
    from tim.models import build_model

    torch.manual_seed(1)
    model = build_model("TiM-digits", conditioning="text", text_dim=12, **TINY)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    recipe = SamplingRecipe(steps=2, height=8, width=8, text_max_length=5)
    return TiMPipeline(model.eval(), recipe, text_encoder=LetterEncoder())


@pytest.fixture(name="run_cli")
def run_cli_fixture():
    """``tim <argv>`` in-process -> (exit status, stdout, stderr)."""
    from helpers.cli import run_cli

    return run_cli
