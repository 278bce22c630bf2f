"""tim.viz: pixel mapping of grids, layout sizes, NaN refusal, plots written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tim import viz
from tim.errors import TimError


def test_grid_maps_minus_one_to_black_and_one_to_white_with_white_padding() -> None:
    images = torch.stack([torch.full((1, 2, 2), -1.0), torch.full((1, 2, 2), 1.0), torch.zeros(1, 2, 2)])
    grid = viz.grid_array(images, nrow=2, scale=1, padding=1)
    assert grid.shape == (2 * 3 + 1, 2 * 3 + 1, 3) and grid.dtype == np.uint8
    assert (grid[1:3, 1:3] == 0).all()  # first image, black
    assert (grid[1:3, 4:6] == 255).all()  # second image, white
    assert (grid[4:6, 1:3] == 128).all()  # 0 -> round(127.5) = 128, mid grey
    assert (grid[0] == 255).all() and (grid[:, 0] == 255).all()  # padding
    assert (grid[4:6, 4:6] == 255).all()  # the empty last cell stays white


def test_grid_scale_is_nearest_neighbour_and_values_are_clipped() -> None:
    images = torch.tensor([[[[3.0, -3.0]]]])  # (1, 1, 1, 2): out-of-range values are clipped for display
    grid = viz.grid_array(images, nrow=1, scale=3, padding=0)
    assert grid.shape == (3, 6, 3)
    assert (grid[:, :3] == 255).all() and (grid[:, 3:] == 0).all()


@pytest.mark.parametrize(
    "bad", [torch.full((1, 1, 2, 2), float("nan")), torch.zeros(2, 2), torch.zeros(1, 2, 2, 2)]
)
def test_grid_refuses_nan_and_wrong_shapes(bad: torch.Tensor) -> None:
    with pytest.raises(TimError):
        viz.grid_array(bad, nrow=1)


def test_save_grid_and_montage_sizes(tmp_path: Path) -> None:
    from PIL import Image

    images = torch.rand(6, 3, 4, 4) * 2 - 1
    path = viz.save_grid(images, tmp_path / "g.png", nrow=3, scale=2)
    assert Image.open(path).size == ((3 * 5 + 1) * 2, (2 * 5 + 1) * 2)
    panel = np.zeros((10, 20, 3), np.uint8)
    montage = viz.montage([panel] * 5, [str(i) for i in range(5)], tmp_path / "m.png", ncol=2, gap=4)
    width, height = Image.open(montage).size
    assert width == 2 * (20 + 4) + 4
    assert height == 3 * (10 + 16 + 4)  # three rows of caption + panel + gap, no title
    with pytest.raises(TimError):
        viz.montage([panel], ["a", "b"], tmp_path / "bad.png")


def test_plots_are_written(tmp_path: Path) -> None:
    from PIL import Image

    line = viz.line_plot(
        [1, 2, 4],
        {"accuracy": [0.5, 0.7, 0.9], "distance": [3, 2, 1]},
        tmp_path / "l.png",
        xlabel="steps",
        reference={"accuracy": 1.0},
    )
    scatter = viz.scatter(
        {"data": torch.randn(50, 2), "samples": np.random.randn(50, 2)}, tmp_path / "s.png", limit=4
    )
    for path in (line, scatter):
        assert Image.open(path).size[0] > 100


def test_label_rows_adds_a_text_column_and_keeps_the_grid() -> None:
    grid = viz.grid_array(torch.zeros(6, 3, 8, 8), nrow=2, scale=4)  # 3 rows of black tiles
    labelled = viz.label_rows(grid, ["a red circle", "two blue squares", "x" * 100], max_chars=20)
    width = labelled.shape[1] - grid.shape[1]
    assert labelled.shape[0] == grid.shape[0] and 8 < width < 200  # the 100-character label was cut
    np.testing.assert_array_equal(labelled[:, width:], grid)  # the pictures themselves are unchanged
    for band in np.array_split(labelled[:, :width], 3):
        assert (band < 128).any() and (band == 255).mean() > 0.5  # dark text on white, in every row
    with pytest.raises(TimError, match="at least one label"):
        viz.label_rows(grid, [])
    one_line = viz.label_rows(grid, ["a red circle\ntwo squares", "b", "c"], max_chars=2)  # no crash
    assert one_line.shape[0] == grid.shape[0]
