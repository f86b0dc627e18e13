"""The bench's memory profile (bench/memprofile.py): a real memray capture of a small program,
reduced to the allocations alive at its heap's peak, each named by who asked for it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.memprofile import command, summarize

PROGRAM = """\
from PIL import Image


def page():
    return Image.new("RGB", (2048, 2048), "white")


held = [page(), page()]
del held
small = page().resize((16, 16))
"""


def test_the_peak_is_named_by_the_pixels_and_the_project_frame_that_made_them(
    tmp_path: Path,
) -> None:
    script = tmp_path / "processors" / "drawing.py"  # a path inside "the project"
    script.parent.mkdir()
    script.write_text(PROGRAM)
    capture = tmp_path / "capture.bin"

    subprocess.run([sys.executable, *command(capture), str(script)], check=True, timeout=120)
    found = summarize(capture)

    # Two 2048 px RGB pictures (Pillow keeps 4 bytes a pixel) were alive at the peak together.
    assert found["peak_heap"] >= 2 * 2048 * 2048 * 4
    assert found["peak_rss"] >= found["peak_heap"]
    top = found["sites"][0]
    assert top["bytes"] >= 2 * 2048 * 2048 * 4
    assert top["site"].startswith("PIL/Image.py:")
    # The C function that asked, not Pillow's allocator itself (src/libImaging/Storage.c).
    assert top["native"]
    assert top["native"] not in {"memory_get_block", "ImagingAllocateArray", "ImagingNewInternal"}
    assert top["caller"] == "processors/drawing.py:5 page"
