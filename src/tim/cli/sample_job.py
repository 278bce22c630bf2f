"""Deprecated alias of :mod:`tim.generation.job` (docs/internals.md, "Layers"), kept for one release.

The sharded, resumable sampling job of ``tim sample`` now lives in :mod:`tim.generation.job` (its
folder and index: :mod:`tim.generation.job_files`; its memory check: :mod:`tim.generation.memory`).
Every name this module had still resolves, with a ``DeprecationWarning`` on each access:
``atomic_write`` and ``save_png`` are the job's writers (:func:`tim.generation.job_files.write_file`,
:func:`~tim.generation.job_files.write_png`, which raise ``WriteFailed``) and ``sample_generators``
is :func:`tim.samplers.seeded_noise`. Importing this module warns about nothing.
"""

from tim.deprecation import moved_names

__getattr__, __dir__ = moved_names(
    __name__,
    [
        "tim.generation.job",
        "tim.generation.job_spec",
        "tim.generation.job_files",
        "tim.generation.memory",
        "tim.generation.backends",
        "tim.io",
    ],
    renamed={
        "atomic_write": ("tim.generation.job_files", "write_file"),
        "save_png": ("tim.generation.job_files", "write_png"),
        "sample_generators": ("tim.samplers", "seeded_noise"),
    },
)
