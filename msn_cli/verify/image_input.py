"""A photo given with ``--image``: read as untrusted input, decoded once per run.

Only the formats photographs come in are opened (:data:`PHOTO_FORMATS`): PIL identifies
dozens more, some through outside programs (EPS runs Ghostscript). The size is read from the
header and refused past :data:`MAX_PIXELS` before a pixel is decoded: a PNG of a few kB can
declare 13300 x 13300 pixels, 530 MB once in RGB, which PIL only warns about. The decoded photo
is kept for the next reader of the same file (the preprocessing, image and golden checks each
read it), so it is decoded once.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from msn_cli.errors import EXIT_BAD_INPUT, MsnError

if TYPE_CHECKING:
    from PIL import Image

PHOTO_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF")
"""PIL's names of the formats cameras and phones write (PIL's JPEG opener also reads the MPO
files many cameras save); no format PIL decodes through another program."""

MAX_PIXELS = 50_000_000
"""More than a camera or phone writes by default (a 50 MP sensor's 8688 x 5792), and the limit
``msn fewshot`` holds its images to; the checks resize a photo to the model's input size
(224 px) anyway. At this size the decoded RGB image is 150 MB."""

_decoded: dict[tuple[int, int, int, int], Image.Image] = {}
"""The last photo decoded, by the file's device, inode, size and modification time."""


def _refused(path: Path, what: str, hint: str | None = None) -> MsnError:
    return MsnError(f"cannot read the image {path}: {what}", hint, exit_code=EXIT_BAD_INPUT)


def read_photo(path: Path) -> Image.Image:
    """The photo at ``path`` in RGB: a regular file in one of :data:`PHOTO_FORMATS`, at most
    :data:`MAX_PIXELS`. Callers share the image returned and must not modify it.

    Raises :class:`~msn_cli.errors.MsnError` (exit 3) for anything else.
    """
    from PIL import Image, UnidentifiedImageError

    from msn_cli.util import safeio

    try:  # a regular file only: a FIFO would block
        with safeio.open_regular(path) as f:
            st = os.fstat(f.fileno())
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            if key in _decoded:
                return _decoded[key]
            with warnings.catch_warnings():  # PIL's bomb warning: the limit here is lower
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im = Image.open(f, formats=PHOTO_FORMATS)
            with im:
                width, height = im.size
                if width * height > MAX_PIXELS:
                    raise _refused(path, f"it is {width} x {height} pixels "
                                   f"({width * height / 1e6:.0f} MP), more than the "
                                   f"{MAX_PIXELS / 1e6:.0f} MP msn decodes",
                                   hint="give a smaller copy: the checks resize it to the "
                                        "model's input size anyway")
                img = im.convert("RGB")
    except UnidentifiedImageError:
        raise _refused(path, "it is not a " + ", ".join(PHOTO_FORMATS[:-1]) + " or "
                       + PHOTO_FORMATS[-1] + " image",
                       hint="give a photo in one of the formats cameras write") from None
    except (OSError, ValueError, Image.DecompressionBombError) as e:  # UnsafeInput is a ValueError
        raise _refused(path, str(e) or type(e).__name__) from e
    _decoded.clear()
    _decoded[key] = img
    return img
