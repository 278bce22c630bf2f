"""Bad inputs (evaluation files: FID Inception weights and reference statistics): one-line TimError rows of the table described in tests/helpers/bad_inputs.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers.bad_inputs import (
    Case,
    WritesMarker,
    check_case,
    marker_of,
    never_unpickled,
    tim_error,
    write_pickle,
)


def _inception_pickle(tmp: Path) -> str:
    from tim.evaluation.inception import load_fid_inception

    path = write_pickle(tmp / "pt_inception-2015-12-05.pth", torch_format=True)
    return never_unpickled(lambda: load_fid_inception(path), tmp)


def _stats_with_pickled_arrays(tmp: Path) -> str:
    from tim.evaluation.inception import load_reference_stats

    path = tmp / "VIRTUAL_imagenet256.npz"
    payload = np.empty(1, dtype=object)
    payload[0] = WritesMarker(marker_of(tmp))
    np.savez(path, mu=payload, sigma=payload)  # object arrays are stored as pickles
    return never_unpickled(lambda: load_reference_stats(path), tmp)


def _empty_inception(tmp: Path) -> str:
    from tim.evaluation.inception import load_fid_inception

    (tmp / "pt_inception-2015-12-05.pth").write_bytes(b"")
    return tim_error(lambda: load_fid_inception(tmp / "pt_inception-2015-12-05.pth"))


CASES: list[Case] = [
    Case(
        "ckpt-inception-pickle",
        "checkpoint",
        "FID Inception weights `.pth` whose payload runs code",
        _inception_pickle,
        ("pt_inception-2015-12-05.pth", "unsafe to unpickle"),
        ("safetensors",),
    ),
    Case(
        "ckpt-fid-stats-pickle",
        "checkpoint",
        "FID reference `.npz` whose arrays are pickles that run code",
        _stats_with_pickled_arrays,
        ("VIRTUAL_imagenet256.npz", "object arrays cannot be loaded"),
        ("pickles are never loaded",),
    ),
    Case(
        "ckpt-empty-inception",
        "checkpoint",
        "zero-byte FID Inception weights",
        _empty_inception,
        ("pt_inception-2015-12-05.pth", "is empty (0 bytes)"),
        ("re-download",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_gets_one_line_message(case: Case, tmp_path: Path) -> None:
    check_case(case, tmp_path)
