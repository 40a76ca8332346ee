"""Text files a user gives us (manifests, prompt lists), read as UTF-8 or refused in one line.

A UTF-8 byte-order mark (Excel's "CSV UTF-8") is dropped and Windows line ends are read as
line ends; any other encoding (latin-1, cp1252, UTF-16) is a UsageError naming the file
and line, rather than a UnicodeDecodeError traceback or silently wrong captions.
"""

from __future__ import annotations

import io

from videogen.errors import UsageError


def read_utf8(path: str) -> str:
    """The text of `path`, without a byte-order mark; OSError for a missing file."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise UsageError(f"'{path}' is not UTF-8 text (byte 0x{data[err.start]:02x} on line {line}); "
                         "re-save it as UTF-8") from None


def utf8_lines(path: str) -> list:
    """The lines of `path` (see read_utf8), without their line ends (\\n, \\r\\n or \\r)."""
    return [line.rstrip("\n") for line in io.StringIO(read_utf8(path), newline=None)]
