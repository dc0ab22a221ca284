"""The Dask engine: Hubble files, local or at any fsspec URL (`s3://bucket/hubble/*.json.gz`), read
partition-wise on a Dask cluster.

A partition is a byte range of a plain file, cut on line boundaries, or a whole gzip file (not
splittable). Each is ingested on a worker by the code the in-process reader runs (`read_lines`:
decode, orient, aggregate) into a `PartialIngest`; only those partial aggregates travel back, and
`finish_partials` combines them in partition order, so the result is the in-process result.

Partitions are planned here rather than by `dask.bytes.read_bytes`, which does not say where its blocks
start: naming the line of a bad record needs the offset (the lines before it are counted only then).
"""

from __future__ import annotations

import io
import itertools
import os
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import fsspec
from distributed import Client, LocalCluster
from fsspec.core import get_fs_token_paths
from fsspec.implementations.local import LocalFileSystem
from fsspec.utils import read_block

from collectors.conntrack import starts_like_conntrack
from collectors.errors import CollectorError, OnError
from collectors.hubble import PartialIngest, finish_partials, lines_starting_before, read_lines
from collectors.parquet import PARQUET_MAGIC
from collectors.records import ObservationSet
from collectors.sources import STDIN, expand_inputs

DEFAULT_BLOCKSIZE = 64 << 20  # about 50,000 flows, half a second of work: partitions balance well over workers
_GZIP_MAGIC = b"\x1f\x8b"  # gzip is recognised by its first bytes, as the in-process reader does
_HEAD_BYTES = 8192  # what the client reads of each file to recognise its kind


@dataclass(frozen=True)
class InputFile:
    """One input file, as the client found it."""

    url: str  # what the workers open
    name: str  # the file as errors and statistics name it
    size: int
    gzip: bool

    def partitions(self, blocksize: int) -> list[Partition]:
        """Even byte ranges of at most `blocksize` (a gzip file is one partition: it cannot be split)."""
        if self.gzip:
            return [Partition(self, 0, self.size)]
        pieces = -(-self.size // blocksize)
        bounds = [self.size * i // pieces for i in range(pieces + 1)]
        return [Partition(self, start, end - start) for start, end in itertools.pairwise(bounds)]


@dataclass(frozen=True)
class Partition:
    """`length` bytes of a file from `offset`, extended to line boundaries by fsspec's `read_block`:
    the lines that start in (offset, offset + length], or the whole file if it is gzip."""

    file: InputFile
    offset: int
    length: int


def read_with_dask(
    specs: Sequence[str],
    *,
    on_error: OnError = OnError.FAIL,
    scheduler: str | None = None,
    workers: int = 2,
    blocksize: int = DEFAULT_BLOCKSIZE,
    progress: Callable[[int], None] | None = None,
) -> ObservationSet:
    """Read Hubble files (paths, globs, fsspec URLs) on the Dask cluster at `scheduler`, or on a local
    cluster of `workers` processes started and closed for this read; the same result as in-process.

    The client lists the files; the workers read them, so a remote cluster needs URLs its workers can
    reach (object storage) and, like the client, the storage's credentials. `progress`, if given, is
    called with the bytes of each partition combined.
    """
    files = input_files(specs)
    partitions = [partition for file in files for partition in file.partitions(blocksize)]
    with _client(scheduler, workers) as client:
        futures = client.map(read_partition, partitions, on_error=on_error, pure=False)
        parts = []
        for partition, future in zip(partitions, futures, strict=True):
            parts.append(future.result())  # in order: the first bad line raises, as in-process
            if progress is not None:
                progress(partition.length)
    observed = finish_partials(parts)
    observed.stats.sources = [file.name for file in files]
    return observed


def read_partition(partition: Partition, on_error: OnError) -> PartialIngest:
    """Ingest one partition (on a worker)."""
    file = partition.file
    if file.gzip:
        with fsspec.open(file.url, "rb", compression="gzip") as stream:
            return read_lines(stream, file.name, on_error)
    with fsspec.open(file.url, "rb") as handle:
        block = read_block(handle, partition.offset, partition.length, delimiter=b"\n")

    def lines_before() -> int:  # the block starts after the first newline at or after `offset`
        return lines_starting_before(file.url, partition.offset + 1, opener=fsspec.open)

    return read_lines(io.BytesIO(block), file.name, on_error, lines_before)


def input_files(specs: Sequence[str]) -> list[InputFile]:
    """Every input file, in order, each once: local paths and globs as the in-process reader expands
    them, URLs expanded by their fsspec filesystem."""
    files: dict[str, InputFile] = {}
    for spec in specs:
        if spec == STDIN:
            raise CollectorError("-: the Dask engine reads files and URLs, not standard input")
        if "://" in spec:
            fs, _token, paths = get_fs_token_paths(spec, mode="rb")
            names = [fs.unstrip_protocol(path) for path in paths]
        else:
            fs, names = LocalFileSystem(), expand_inputs([spec])
            paths = [os.path.realpath(name) for name in names]
        if not paths:
            raise CollectorError(f"{spec}: no file matches this pattern")
        try:
            sizes = fs.sizes(paths)
            heads = fs.cat_ranges(paths, [0] * len(paths), [_HEAD_BYTES] * len(paths), on_error="raise")
        except FileNotFoundError as exc:
            raise CollectorError(f"{spec}: no such file") from exc
        for path, name, size, head in zip(paths, names, sizes, heads, strict=True):
            if head.startswith(PARQUET_MAGIC):
                raise CollectorError(f"{name}: saved observations (Parquet) are read by the local engine, not Dask")
            gzip = head.startswith(_GZIP_MAGIC)
            if starts_like_conntrack(_first_lines(head, gzip)):
                raise CollectorError(f"{name}: conntrack dumps are read by the local engine, not Dask")
            url = fs.unstrip_protocol(path)
            files.setdefault(url, InputFile(url, name, size, gzip))
    return list(files.values())


def _first_lines(head: bytes, gzip: bool) -> list[bytes]:
    """The complete lines at the start of a file whose first bytes are `head`."""
    if gzip:
        try:
            head = zlib.decompressobj(wbits=31).decompress(head)  # as much as these bytes hold
        except zlib.error:
            return []  # the worker that reads it reports the damage
    return head.split(b"\n")[:-1]


@contextmanager
def _client(scheduler: str | None, workers: int) -> Iterator[Client]:
    """A client of the cluster at `scheduler`, or of a local cluster of `workers` processes."""
    if scheduler is None:  # one thread per worker: ingest is Python code that holds the GIL
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0")
        with cluster, Client(cluster) as client:
            yield client
        return
    try:
        client = Client(scheduler)
    except OSError as exc:
        raise CollectorError(f"{scheduler}: cannot connect to the Dask scheduler: {exc}") from exc
    with client:
        yield client
