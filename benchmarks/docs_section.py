"""One named section of ``docs/benchmarks.md``, rewritten by the benchmark that measured it.

Each benchmark owns the part of the file between ``<!-- name:start -->`` and
``<!-- name:end -->``; rewriting it leaves every other section alone. The file is written to a
temporary file beside it and then renamed, so an interrupted run never leaves it half written.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
INTRO = (
    "# Benchmarks\n\n"
    "Figures measured by the scripts in `benchmarks/`; each section names the command that\n"
    "produced it. Benchmarks are run on purpose, not by the test suite.\n"
)


def markers(name: str) -> tuple[str, str]:
    """The start and end comments that delimit section ``name``."""
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def write_section(name: str, body: str, path: Path = DOC) -> None:
    """Replace section ``name`` of ``path`` with ``body`` (appended if the file lacks it)."""
    start, end = markers(name)
    block = f"{start}\n{body.strip(chr(10))}\n{end}"
    text = path.read_text() if path.exists() else INTRO
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
