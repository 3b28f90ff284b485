"""Contact sheets: PNG grids of images with a caption under each, for a person to look at.

Used by `data audit` (duplicate groups side by side, one group a row) and `audit` (the top label issues
and outliers). Images are loaded one at a time by the caller's function, so a sheet of 30 rows never
holds more than its thumbnails. Matplotlib with the Agg backend (no display needed).
"""

from __future__ import annotations

import io
import textwrap

import numpy as np

CELL_INCHES = 2.3  # width of one image cell; captions get ~28 characters a line at 7 pt
MAX_COLUMNS = 6
THUMBNAIL = 160  # pixels of the longer side kept per image (bounds the PNG's size and memory)


def thumbnail(image: np.ndarray) -> np.ndarray:
    """uint8 [H, W, C] (C 1 or 3) -> uint8 [h, w, 3] with max(h, w) <= THUMBNAIL, aspect ratio kept."""
    from PIL import Image

    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    picture = Image.fromarray(image.astype(np.uint8)).convert("RGB")
    picture.thumbnail((THUMBNAIL, THUMBNAIL), Image.LANCZOS)
    return np.asarray(picture)


def write_sheet(path, rows: list[list[tuple[np.ndarray | None, str]]], *, title: str) -> bytes:
    """Draws `rows` of (image, caption) cells into a PNG at `path` (atomically) and returns its bytes.

    Args:
        path: the PNG to write, or None to only return the bytes.
        rows: one list per row (a duplicate group, or a slice of a ranked list); at most MAX_COLUMNS cells
            are drawn per row, the rest summarised in the last caption. An image None draws an empty cell
            with its caption (a file that no longer decodes).
        title: the sheet's heading (what it shows and how it was chosen).
    Returns:
        The PNG bytes.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    from pipeline.core.fileio import atomic_write

    columns = max(1, min(MAX_COLUMNS, max((len(row) for row in rows), default=1)))
    heading = textwrap.fill(title, 30 * columns)
    heading_inches = 0.2 * (heading.count("\n") + 1) + 0.1  # kept free above the cells: no overlap
    height = CELL_INCHES * 1.3 * max(len(rows), 1) + 0.4 + heading_inches
    figure, axes = pyplot.subplots(len(rows) or 1, columns, figsize=(CELL_INCHES * columns, height), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for row_index, row in enumerate(rows):
        shown = row[:columns]
        for column, (image, caption) in enumerate(shown):
            axis = axes[row_index][column]
            if column == columns - 1 and len(row) > columns:
                caption += f"\n(+{len(row) - columns} more)"
            if image is not None:
                axis.imshow(thumbnail(image), interpolation="nearest")
            lines = [textwrap.fill(part, 30) for part in caption.split("\n")]
            axis.set_title("\n".join(lines), fontsize=7, loc="left")
    figure.suptitle(heading, fontsize=9, x=0.01, y=1 - 0.05 / height, ha="left", va="top")
    figure.tight_layout(rect=(0, 0, 1, 1 - heading_inches / height))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    pyplot.close(figure)
    data = buffer.getvalue()
    if path is not None:

        def write(temporary):
            with open(temporary, "wb") as handle:
                handle.write(data)

        atomic_write(path, write, suffix=".png")
    return data
