"""Helpers of the figure-command tests: PNG validity and CSV reading."""
import csv
import os


def check_png(path, min_side=150):
    """A real PNG (signature), < 300 KB, that matplotlib reads back as a non-blank RGB(A) image."""
    import matplotlib.image

    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    img = matplotlib.image.imread(str(path))
    assert img.ndim == 3 and img.shape[2] in (3, 4) and min(img.shape[:2]) >= min_side
    assert img[..., :3].std() > 0.01  # not a blank canvas
    assert os.path.getsize(path) < 300_000


def read_csv(path):
    with open(path) as f:
        return list(csv.reader(f))
