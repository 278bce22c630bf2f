"""tim.generation: everything that knows sampling recipes, files and memory plans (docs/internals.md, "Layers").

* :mod:`~tim.generation.recipe`: :class:`SamplingRecipe` (THE sampling knobs and their defaults) and
  the released recipes;
* :mod:`~tim.generation.memory`: every generation memory estimate and check;
* :mod:`~tim.generation.pipeline`: :class:`TiMPipeline`, the diffusers-style front end;
* :mod:`~tim.generation.folders`: loading a run, a pipeline folder, a released file or a bundled
  model, and ``save_pretrained``;
* :mod:`~tim.generation.job` (with :mod:`~tim.generation.job_files`): the sharded, resumable
  sampling job of ``tim sample``;
* :mod:`~tim.generation.backends`: what that job samples from, and ``tim demo``'s in-memory
  :func:`generate`.

The sampling loop itself is :func:`tim.samplers.sample_batches`, one layer below.
"""

from tim.generation.backends import (
    Generated,
    PipelineBackend,
    VectorBackend,
    generate,
    load_backend,
    sample_classes,
    weights_fingerprint,
)
from tim.generation.folders import (
    RunInfo,
    load_for_sampling,
    resolve_dtype,
    resolve_pipeline_folder,
)
from tim.generation.job import JobResult, run_job
from tim.generation.job_spec import Backend, BatchOutput, Job
from tim.generation.memory import (
    MEMORY_HEADROOM,
    available_memory_bytes,
    check_memory,
    estimate_generation_bytes,
)
from tim.generation.pipeline import PipelineOutput, TiMPipeline
from tim.generation.recipe import RELEASED_RECIPES, SamplingRecipe, released_recipe

__all__ = [
    "MEMORY_HEADROOM",
    "RELEASED_RECIPES",
    "Backend",
    "BatchOutput",
    "Generated",
    "sample_classes",
    "Job",
    "JobResult",
    "PipelineBackend",
    "PipelineOutput",
    "RunInfo",
    "SamplingRecipe",
    "TiMPipeline",
    "VectorBackend",
    "available_memory_bytes",
    "check_memory",
    "estimate_generation_bytes",
    "generate",
    "load_backend",
    "load_for_sampling",
    "released_recipe",
    "resolve_dtype",
    "resolve_pipeline_folder",
    "run_job",
    "weights_fingerprint",
]
