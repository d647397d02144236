"""Line readers shared by the BEIR and TREC parsers: UTF-8 checked, 1-based line numbers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from dualist.errors import DataError

_BOM = b"\xef\xbb\xbf"


def iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for every non-blank line, without its line ending.

    Bytes that are not UTF-8 raise a :class:`DataError` naming the line and the byte offset (in the
    line and in the file). A UTF-8 byte-order mark at the start of the file is skipped.
    """
    offset = 0
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            start = offset
            offset += len(raw)
            if lineno == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM):]
                start += len(_BOM)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(
                    f"invalid UTF-8 byte 0x{raw[e.start]:02x} at byte {e.start + 1} of the line "
                    f"(file offset {start + e.start})",
                    path=path, line=lineno,
                    hint="re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8 in > out`") from None
            text = text.rstrip("\r\n")
            if text.strip():
                yield lineno, text
