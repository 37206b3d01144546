"""The figure every benchmark plot is drawn in: matplotlib without a display, saved as one PNG."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def figure(path: Path, title: str, ncols: int = 1, size: tuple[float, float] = (7, 4)) -> Iterator[list]:
    """Yields `ncols` axes side by side; on leaving, titles the figure and writes it to `path`."""
    import matplotlib  # imported here: only a run that plots needs it (the `bench` extra)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=size, squeeze=False)
    yield list(axes[0])
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
