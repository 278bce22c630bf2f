"""The modules that moved into tim.generation keep every old name for one release, with a warning."""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings

import pytest

# Public names of the modules before the move (tim.pipeline, tim.cli.sample_job; classes, functions,
# constants; the standard-library names they happened to import resolve too).
OLD_NAMES = {
    "tim.pipeline": [
        "ACTIVATION_MARGIN", "AUTOENCODER_DIR", "DEFAULT_MAX_BATCH", "FORMAT", "FORMAT_VERSION",
        "MAX_STEPS", "MEMORY_HEADROOM", "MODEL_DIR", "OUTPUT_TYPES", "OutputType", "PIPELINE_NAME",
        "PipelineOutput", "RECIPE_NAME", "RELEASED_RECIPES", "SamplingRecipe", "TEXT_ENCODER_DIR",
        "TiMPipeline", "available_memory_bytes", "estimate_generation_bytes", "latent_metadata",
        "load_autoencoder", "load_text_encoder", "part_location", "read_json", "released_recipe",
        "replace_folder", "resolve_dtype", "resolve_pipeline_folder", "run_data_facts",
        "run_recipe_fields", "save_part", "save_text_part",
    ],
    "tim.cli.sample_job": [
        "Backend", "BatchOutput", "GRID_MAX_COLS", "GRID_MAX_PIXELS", "GRID_MAX_ROWS", "GRID_MIN_TILE",
        "INDEX_FORMAT", "INDEX_NAME", "Job", "JobLock", "JobResult", "MAX_SHARD_SAMPLES",
        "MEMORY_HEADROOM", "RunLock", "SHARD_BYTES", "WriteFailed", "atomic_write", "check_job_dir",
        "check_memory", "check_writable_out", "default_shard_size", "grid_layout", "host_bytes",
        "identity_differences", "make_job_dir", "read_index", "refuse_link", "refuse_links", "run_job",
        "sample_generators", "save_png", "split_count", "start_index", "to_uint8", "validate_index",
        "write_error", "write_grid", "write_index",
    ],
}  # fmt: skip


def test_importing_the_old_modules_warns_about_nothing() -> None:
    code = (
        "import warnings; warnings.simplefilter('error'); import tim.pipeline, tim.cli.sample_job, "
        "tim.evaluation.quality, tim.evaluation.geneval_bench, tim.cli.demo_t2i, tim.cli.demo_latent"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("module", list(OLD_NAMES))
def test_every_old_name_resolves_with_a_deprecation_warning(module: str) -> None:
    old = importlib.import_module(module)
    for name in OLD_NAMES[module]:
        with pytest.warns(DeprecationWarning, match=f"{module}.{name} is deprecated; use tim."):
            assert getattr(old, name) is not None
    with pytest.raises(AttributeError):
        old.no_such_name  # noqa: B018


def test_the_old_names_are_the_new_objects() -> None:
    import tim.cli.sample_job as old_job
    import tim.generation as new
    import tim.pipeline as old
    from tim.generation import job_files
    from tim.samplers import seeded_noise

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert old.TiMPipeline is new.TiMPipeline and old.SamplingRecipe is new.SamplingRecipe
        assert old.estimate_generation_bytes is new.estimate_generation_bytes
        assert old_job.run_job is new.run_job and old_job.Job is new.Job
        assert old_job.sample_generators is seeded_noise  # the one seed + i rule
        assert old_job.atomic_write is job_files.write_file and old_job.save_png is job_files.write_png
        assert old.MEMORY_HEADROOM == old_job.MEMORY_HEADROOM == new.MEMORY_HEADROOM


@pytest.mark.parametrize(
    ("old", "name", "new", "new_name"),
    [
        ("tim.evaluation.quality", "QualityConfig", "tim.experiments.quality", "QualityConfig"),
        ("tim.evaluation.geneval_bench", "score_model", "tim.experiments.geneval", "score_model"),
        ("tim.evaluation.geneval_bench", "write_atomic", "tim.io", "write_text"),
        ("tim.cli.demo_t2i", "GRID_PROMPTS", "tim.experiments.t2i", "GRID_PROMPTS"),
        ("tim.cli.demo_latent", "EXPERIMENT", "tim.experiments.latent", "EXPERIMENT"),
        ("tim.cli.demo", "DemoDefaults", "tim.experiments.engine", "Defaults"),
    ],
)
def test_the_moved_demo_and_benchmark_names_resolve_with_a_warning(
    old: str, name: str, new: str, new_name: str
) -> None:
    module = importlib.import_module(old)
    with pytest.warns(DeprecationWarning, match=f"{old}.{name} is deprecated; use {new}.{new_name}"):
        value = getattr(module, name)
    assert value is getattr(importlib.import_module(new), new_name)
    if old != "tim.cli.demo":
        assert name in dir(module)
    with pytest.raises(AttributeError):
        module.no_such_name  # noqa: B018


def test_the_old_quality_module_still_gives_machine_info_without_a_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from tim.evaluation.quality import machine_info

    assert "python" in str(machine_info()).lower() or machine_info()
