"""Deprecated alias of :mod:`tim.generation` (docs/internals.md, "Layers"), kept for one release.

Every name this module had still resolves, from the :mod:`tim.generation` module that now holds it
(``TiMPipeline`` and ``PipelineOutput``: :mod:`tim.generation.pipeline`; ``SamplingRecipe`` and the
released recipes: :mod:`tim.generation.recipe`; memory estimates: :mod:`tim.generation.memory`;
folders and runs: :mod:`tim.generation.folders`), with a ``DeprecationWarning`` on each access.
Importing this module warns about nothing.
"""

from tim.deprecation import moved_names

__getattr__, __dir__ = moved_names(
    __name__,
    [
        "tim.generation.pipeline",
        "tim.generation.recipe",
        "tim.generation.memory",
        "tim.generation.folders",
        "tim.training.recipe",
    ],
)
