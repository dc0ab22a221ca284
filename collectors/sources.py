"""Input files: globs, `-` for stdin, gzip detected by its magic bytes, numbered lines.

A gzip file that is cut short or corrupt yields every complete line before the break, then raises
`TruncatedInput` naming the line and the byte offset where it broke: the reader of the lines reports
it as a bad record (an error, or skipped and counted with `--on-error skip`).
"""

from __future__ import annotations

import glob
import io
import os
import sys
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, BinaryIO

from collectors.errors import CollectorError

STDIN = "-"
READ_BUFFER = 1 << 20
"""Bytes read at once: reading lines from a 1 MiB buffer costs a third of reading them from 8 KiB."""
_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_WBITS = 16 + zlib.MAX_WBITS
_CHUNK = 1 << 15
"""Compressed bytes read at a time: about half a megabyte of lines, so that a reader in another process,
fed through a pipe (`collectors.hubble.read_gzip_in_two_processes`), never waits long for the next lines."""


class TruncatedInput(CollectorError):
    """A compressed file breaks off: the lines before `line` were read, the rest is lost."""

    def __init__(self, path: str, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path, self.line, self.message = path, line, message


def expand_inputs(specs: Sequence[str]) -> list[str]:
    """Expand globs, keep `-`, drop repeated paths (a file given twice would count twice).

    Raises `CollectorError` for a path or pattern that matches nothing.
    """
    paths: list[str] = []
    seen: set[str] = set()
    for spec in specs:
        if spec == STDIN:
            matches = [STDIN]
        elif glob.has_magic(spec):
            matches = sorted(glob.glob(spec, recursive=True))
            matches = [m for m in matches if os.path.isfile(m)]
            if not matches:
                raise CollectorError(f"{spec}: no file matches this pattern")
        elif os.path.isdir(spec):
            raise CollectorError(f"{spec}: is a directory; give files or a glob such as '{spec}/*.json'")
        elif not os.path.exists(spec):
            raise CollectorError(f"{spec}: no such file")
        else:
            matches = [spec]
        for match in matches:
            key = match if match == STDIN else os.path.realpath(match)
            if key not in seen:
                seen.add(key)
                paths.append(match)
    return paths


def open_input(path: str) -> BinaryIO:
    """Open a file or stdin for binary reading, decompressing gzip transparently."""
    if path == STDIN:
        raw: BinaryIO = sys.stdin.buffer
    else:
        try:
            raw = open(path, "rb", buffering=READ_BUFFER)  # noqa: SIM115 - returned to the caller, who closes it
        except OSError as exc:
            raise CollectorError(f"{path}: {exc.strerror}") from exc
    # stdin may be any binary stream (a test's BytesIO): typeshed wants a raw stream, BufferedReader only readinto
    buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw, READ_BUFFER)  # type: ignore[type-var]
    if buffered.peek(2)[:2] == _GZIP_MAGIC:
        return io.BufferedReader(GzipLines(buffered, display_name(path)))
    return buffered


def line_batches(stream: BinaryIO, size: int) -> Iterator[list[bytes]]:
    """The lines of `stream` in lists of about `size` bytes (what `readlines(size)` gives), except that
    where a compressed input breaks off, the complete lines before the break come first and then
    `TruncatedInput` (`readlines` would drop the lines of the batch it was filling)."""
    batch: list[bytes] = []
    length = 0
    try:
        for line in stream:
            batch.append(line)
            length += len(line)
            if length >= size:
                yield batch
                batch, length = [], 0
    except TruncatedInput:
        if batch:
            yield batch
        raise
    if batch:
        yield batch


def input_progress(stream: BinaryIO, progress: Callable[[int], None] | None) -> Callable[[int], None] | None:
    """`progress` (told the bytes of the lines read) as it should count for `stream` (`open_input`'s):
    the compressed bytes read so far of a gzip file, whose size is what a progress bar shows."""
    source = getattr(stream, "raw", None)
    if progress is None or not isinstance(source, GzipLines):
        return progress
    reported = 0

    def advance(_decompressed: int) -> None:
        nonlocal reported
        position = source.compressed_position
        progress(position - reported)
        reported = position

    return advance


class GzipLines(io.RawIOBase):
    """The decompressed bytes of a gzip stream (of one or more members), handed out in whole lines.

    Where the stream breaks off (cut short, or corrupt), `TruncatedInput` is raised once every
    complete line before it was read: an unfinished last line is never handed out as a line.
    """

    def __init__(self, raw: BinaryIO, name: str) -> None:
        super().__init__()
        self._raw, self._name = raw, name
        self._decompressor = zlib.decompressobj(_GZIP_WBITS)
        self._offset = 0  # compressed bytes read
        self._ready = memoryview(b"")  # complete lines, not yet handed out
        self._tail = b""  # an unfinished line
        self._lines = 0  # lines handed out or ready
        self._done = False
        self._cut: TruncatedInput | None = None

    def readable(self) -> bool:
        return True

    @property
    def compressed_position(self) -> int:
        """The compressed bytes read so far (for progress over the file's size)."""
        return self._offset

    def readinto(self, buffer: Any) -> int:
        while not self._ready and not self._done:
            self._fill()
        if not self._ready and self._cut is not None:
            raise self._cut
        size = min(len(buffer), len(self._ready))
        buffer[:size] = self._ready[:size]
        self._ready = self._ready[size:]
        return size

    def close(self) -> None:
        self._raw.close()
        super().close()

    def _fill(self) -> None:
        chunk = self._raw.read(_CHUNK)
        if not chunk:
            if self._decompressor.eof or not (self._offset or self._tail):
                self._done, self._ready = True, memoryview(self._tail)
                return
            self._break(self._offset, "the compressed data ends before the end of the gzip stream (the file was cut)")
            return
        start = self._offset
        self._offset += len(chunk)
        data = b""
        while chunk:
            saved = self._decompressor.copy()
            try:
                data += self._decompressor.decompress(chunk)
            except zlib.error as exc:
                at, before = _read_to_error(saved, chunk)
                self._take(data + before)
                self._break(start + at, f"corrupt compressed data ({exc})")
                return
            if not self._decompressor.eof:
                break
            start += len(chunk) - len(self._decompressor.unused_data)
            chunk = self._decompressor.unused_data.lstrip(b"\0")  # another member, after zero padding
            start += len(self._decompressor.unused_data) - len(chunk)
            if chunk:
                self._decompressor = zlib.decompressobj(_GZIP_WBITS)
        self._take(data)

    def _take(self, data: bytes) -> None:
        """Make the complete lines of the tail and `data` ready; keep the unfinished one."""
        data = self._tail + data
        end = data.rfind(b"\n") + 1
        self._ready, self._tail = memoryview(data[:end]), data[end:]
        self._lines += data.count(b"\n", 0, end)

    def _break(self, offset: int, why: str) -> None:
        """End the stream at compressed byte `offset`: the lines already ready are still read, then
        `TruncatedInput` is raised."""
        lost = f"; {len(self._tail):,} bytes of an unfinished line" if self._tail else ""
        self._done, self._tail = True, b""
        self._cut = TruncatedInput(
            self._name,
            self._lines + 1,
            f"gzip stream broken at byte {offset:,}: {why}; the rest of the file is lost{lost}",
        )


def _read_to_error(decompressor: Any, chunk: bytes) -> tuple[int, bytes]:
    """Feed `chunk` byte by byte to a copy of the decompressor that failed on it: the offset of the
    first bad byte, and what decompressed before it."""
    out = []
    for index in range(len(chunk)):
        try:
            out.append(decompressor.decompress(chunk[index : index + 1]))
        except zlib.error:
            return index, b"".join(out)
    return len(chunk), b"".join(out)


def numbered_lines(path: str) -> Iterator[tuple[int, bytes]]:
    """Yield (line number, line without its newline) for every line of a file, gzip or not."""
    stream = open_input(path)
    try:
        for number, line in enumerate(stream, start=1):
            yield number, line.rstrip(b"\r\n")
    except (OSError, EOFError) as exc:
        raise CollectorError(f"{path}: cannot read: {exc}") from exc
    finally:
        if path != STDIN:
            stream.close()


def display_name(path: str) -> str:
    return "<stdin>" if path == STDIN else path
