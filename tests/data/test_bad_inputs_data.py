"""Bad inputs (data sources: image folders, `DataConfig`, latent shards): one-line TimError rows of the table described in tests/helpers/bad_inputs.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from helpers.bad_inputs import (
    Case,
    check_case,
    data_config_error,
    never_unpickled,
    save_image,
    tim_error,
    write_pickle,
)


def folder_error(make: Callable[[Path], None], **config: Any) -> Callable[[Path], str]:
    """Build an image folder with ``make(root)``, then ask for a data source over it."""

    def trigger(tmp: Path) -> str:
        from tim.data import DataConfig, build_data_source

        root = tmp / "images"
        root.mkdir()
        make(root)
        return tim_error(
            lambda: build_data_source(DataConfig(name="image_folder", root=str(root), **config), batch_size=4)
        )

    return trigger


def _empty_classes(root: Path) -> None:
    (root / "cat").mkdir()
    (root / "dog").mkdir()


def _only_text_files(root: Path) -> None:
    (root / "cat").mkdir()
    (root / "cat" / "notes.txt").write_text("not an image")


def _mostly_corrupt(root: Path) -> None:
    for k in range(4):
        save_image(root / "cat" / f"ok{k}.png", seed=k)
    for k in range(3):
        (root / "cat" / f"broken{k}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"truncated")


def _all_corrupt(root: Path) -> None:
    for k in range(3):
        (root / "cat" / f"broken{k}.jpg").parent.mkdir(exist_ok=True)
        (root / "cat" / f"broken{k}.jpg").write_bytes(b"this is not a JPEG")


def _rgb_among_grey(root: Path) -> None:
    save_image(root / "cat" / "a.png", "L")
    save_image(
        root / "cat" / "b.png", "RGB"
    )  # RGBA is decoded over black now; colour for grey is still refused


def _grey_images(root: Path) -> None:
    save_image(root / "cat" / "a.png", "L")
    save_image(root / "dog" / "b.png", "L", seed=1)


def _mixed_sizes(root: Path) -> None:
    save_image(root / "cat" / "small.png", size=(8, 8))
    save_image(root / "cat" / "large.png", size=(16, 12))


def _bad_root(tmp: Path) -> str:
    from tim.data import DataConfig, build_data_source

    return tim_error(
        lambda: build_data_source(DataConfig(name="image_folder", root=str(tmp / "missing")), batch_size=4)
    )


def latents_error(make: Callable[[Path], None]) -> Callable[[Path], str]:
    """Write latent shards with ``make(root)``, then ask for a "latents" data source over them."""

    def trigger(tmp: Path) -> str:
        from tim.data import DataConfig, build_data_source

        root = tmp / "latents"
        root.mkdir()
        make(root)
        return never_unpickled(
            lambda: build_data_source(DataConfig(name="latents", root=str(root)), batch_size=2), tmp
        )

    return trigger


def _write_shards(root: Path, latents: torch.Tensor) -> None:
    from tim.data import write_latent_shards

    write_latent_shards(root, latents, torch.arange(len(latents)) % 2, scale=0.18215)


def _no_shards(root: Path) -> None:
    (root / "readme.txt").write_text("latents will go here")


def _pickle_shard(root: Path) -> None:
    write_pickle(root / "shard_00000.safetensors", torch_format=True)


def _foreign_shard(root: Path) -> None:
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(2, 2)}, str(root / "model.safetensors"))


def _nan_latents(root: Path) -> None:
    latents = torch.zeros(4, 4, 8, 8)
    latents[1, 2, 3, 4] = float("nan")
    _write_shards(root, latents)


def _mixed_latent_channels(root: Path) -> None:
    _write_shards(root / "a", torch.zeros(2, 4, 8, 8))
    _write_shards(root / "b", torch.zeros(2, 8, 8, 8))
    for shard in sorted(root.glob("*/*.safetensors")):
        shard.rename(root / f"{shard.parent.name}_{shard.name}")


CASES: list[Case] = [
    Case(
        "data-empty-folder",
        "data",
        "image folder whose class folders are empty",
        folder_error(_empty_classes),
        ("no images", "found under"),
        ("one sub-folder per class",),
    ),
    Case(
        "data-no-image-files",
        "data",
        "image folder holding only `.txt` files",
        folder_error(_only_text_files),
        ("no images",),
        ("put images",),
    ),
    Case(
        "data-root-missing",
        "data",
        "`data.root` that does not exist",
        _bad_root,
        ("data.root", "missing", "not a folder"),
        ("set data.root",),
    ),
    Case(
        "data-root-not-set",
        "data",
        "`data.name=image_folder` without `data.root`",
        data_config_error(name="image_folder"),
        ("needs data.root",),
        ("set data.root",),
    ),
    Case(
        "data-too-many-corrupt",
        "data",
        "3 of 7 images corrupt (limit 1%)",
        folder_error(_mostly_corrupt),
        ("3 of 7 images", "skipped", "broken0.png", "max_bad_fraction=0.01"),
        ("remove or repair", "raise data.max_bad_fraction"),
    ),
    Case(
        "data-all-corrupt",
        "data",
        "every image unreadable, `data.max_bad_fraction=1`",
        folder_error(_all_corrupt, max_bad_fraction=1.0),
        ("none of the 3 images",),
        ("valid images",),
    ),
    Case(
        "data-wrong-channels",
        "data",
        "an RGB image among grey ones (`data.channels=1`)",
        folder_error(_rgb_among_grey, channels=1),
        ("1 image(s)", "channel count", "b.png", "mode RGB", "3 colour"),
        ("convert them to grey", "set data.channels"),
    ),
    Case(
        "data-grey-for-rgb",
        "data",
        "grey images with `data.channels=3`",
        folder_error(_grey_images),
        ("2 image(s)", "channel count", "mode L"),
        ("convert them to RGB",),
    ),
    Case(
        "data-unsupported-channels",
        "data",
        "`data.channels=4`",
        data_config_error(channels=4),
        ("data.channels=4",),
        ("1 (grey) or 3 (RGB)",),
    ),
    Case(
        "data-mixed-sizes",
        "data",
        "8x8 and 12x16 images with `data.image_size=0` (one size needed)",
        folder_error(_mixed_sizes),
        ("2 different sizes", "small.png is 8x8", "large.png is 12x16"),
        ("set data.image_size", "data.bucketed=true"),
    ),
    Case(
        "data-size-not-multiple",
        "data",
        "`data.image_size=9` with `data.patch_multiple=2`",
        data_config_error(name="image_folder", root="x", image_size=9),
        ("image_size=9", "not a multiple"),
        ("divisible",),
    ),
    Case(
        "data-bad-fraction",
        "data",
        "`data.max_bad_fraction=1.5`",
        data_config_error(max_bad_fraction=1.5),
        ("max_bad_fraction=1.5", "outside [0, 1]"),
        ("between 0 and 1",),
    ),
    Case(
        "data-hflip-digits",
        "data",
        "`data.hflip=true` for digits",
        data_config_error(name="digits", hflip=True),
        ("hflip=true", "digits"),
        ("set data.hflip=false",),
    ),
    Case(
        "data-digits-size",
        "data",
        "`data.image_size=16` for the 8x8 digits",
        data_config_error(image_size=16),
        ("image_size=16", "8x8"),
        ("image_size=0 or 8",),
    ),
    Case(
        "data-latents-none",
        "data",
        "`data.name=latents` on a folder without shards",
        latents_error(_no_shards),
        ("no *.safetensors latent shards",),
        ("write_latent_shards",),
    ),
    Case(
        "data-latents-pickle",
        "data",
        "a pickle (code payload) named like a latent shard",
        latents_error(_pickle_shard),
        ("shard_00000.safetensors", "not a readable safetensors"),
        ("rewrite or remove that shard",),
    ),
    Case(
        "data-latents-foreign",
        "data",
        "a model's `.safetensors` among latent shards",
        latents_error(_foreign_shard),
        ("model.safetensors", "not a tim latent shard"),
        ("write_latent_shards",),
    ),
    Case(
        "data-latents-nan",
        "data",
        "a latent shard holding NaN",
        latents_error(_nan_latents),
        ("holds NaN or Inf",),
        ("re-encode that shard",),
    ),
    Case(
        "data-latents-mixed-channels",
        "data",
        "latent shards with 4 and 8 channels in one folder",
        latents_error(_mixed_latent_channels),
        ("8 latent channels", "earlier shards 4"),
        ("one autoencoder",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_gets_one_line_message(case: Case, tmp_path: Path) -> None:
    check_case(case, tmp_path)


def test_a_few_corrupt_images_are_skipped_and_counted(tmp_path: Path) -> None:
    """Below ``max_bad_fraction`` unreadable files are skipped, counted and reported, not fatal."""
    from tim.data import DataConfig, build_data_source

    root = tmp_path / "images"
    for k in range(9):
        save_image(root / "cat" / f"ok{k}.png", seed=k)
    (root / "cat" / "broken.png").write_bytes(b"not a png")
    with pytest.warns(UserWarning, match=r"1 of 10 images .* skipped.*broken\.png"):
        source = build_data_source(
            DataConfig(name="image_folder", root=str(root), max_bad_fraction=0.2), batch_size=3
        )
    assert [Path(f).name for f, _ in source.skipped_files] == ["broken.png"]
    assert source.info.num_items == 9
    assert source.next_batch()["x"].shape == (3, 3, 8, 8)
