"""`make demo` as a newcomer runs it: one book on the embedded Postgres, and the last line of its
output is the finished PDF (README: "last line: the PDF"), with the print files beside it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pypdf import PdfReader

from testkit.daemon_process import REPO


def test_the_demo_ends_with_the_path_of_a_finished_book(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE", "GEMINI"))}
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "run_monitor.py"),
            "demo",
            "--home",
            str(tmp_path / "demo"),
            "--name",
            "Zoë-Anne",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    book = Path(lines[-1])
    assert book.name == "book.pdf" and book.is_file(), lines[-3:]
    reader = PdfReader(book)
    assert len(reader.pages) == 9  # the cover and the sample book's 8 pages
    assert "Zoë-Anne" in reader.pages[1].extract_text()
    printed = {line.partition(": ")[0]: Path(line.partition(": ")[2]) for line in lines[-3:-1]}
    assert set(printed) == {"print interior", "print cover"}
    assert all(path.is_file() and path.parent == book.parent for path in printed.values())
