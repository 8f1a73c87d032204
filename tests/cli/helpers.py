"""Assertions shared by the CLI tests."""

from __future__ import annotations


def assert_one_line_error(result, code: int, *fragments: str) -> str:
    """Exit ``code``, exactly one non-empty line on stderr naming the error, nothing on stdout,
    no traceback. Returns the line."""
    assert result.code == code, (result.code, result.err)
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    line = lines[0]
    assert line.startswith("lorascan") and ": error: " in line, line
    assert "Traceback" not in result.err + result.out
    assert result.out == ""
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


def table_row(out: str, first_cell: str) -> list[str]:
    """The cells of the rich table row whose first cell is ``first_cell``."""
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("│┃").replace("┃", "│").split("│")]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no table row '{first_cell}' in:\n{out}")
