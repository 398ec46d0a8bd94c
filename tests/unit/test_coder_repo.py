"""What coder uploads of a repository: every file its tests may read, up to what one upload
request can hold (coder.repo, coder.sandbox's batches)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from coder.repo import MAX_FILE_BYTES, load
from coder.sandbox import Caps, batches, wire_size


def test_a_large_generated_source_goes_along(tmp_path: Path) -> None:
    """wcwidth 0.9.5: a test globs `libwcwidth/src/tables/*.c`, one of them 2.7 MB."""
    tables = tmp_path / "libwcwidth" / "src" / "tables"
    tables.mkdir(parents=True)
    big = "static const int t[] = {\n" + "  0x0000, 0x0001, 0x0002, 0x0003,\n" * 80_000 + "};\n"
    assert len(big) > 2_700_000
    (tables / "table_terminal_overrides.c").write_text(big)
    (tmp_path / "pkg.py").write_text("x = 1\n")
    (tmp_path / "huge.bin").write_bytes(b"\0" * (MAX_FILE_BYTES + 1))
    repo = asyncio.run(load(tmp_path))
    assert repo.text["libwcwidth/src/tables/table_terminal_overrides.c"] == big
    assert repo.skipped == [f"huge.bin ({MAX_FILE_BYTES + 1} bytes)"]


def test_the_largest_file_fits_one_upload_request() -> None:
    caps = Caps()
    assert wire_size("a/" * 100 + "f.c", b"x" * MAX_FILE_BYTES) <= caps.max_bytes
    files = {"a.c": b"x" * MAX_FILE_BYTES, "b.c": b"y" * MAX_FILE_BYTES, "c.py": b"z"}
    sent = list(batches(files, set(), caps))
    assert [[f.path for f in batch] for batch in sent] == [["a.c"], ["b.c", "c.py"]]
