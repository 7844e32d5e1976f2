"""Per-partition response cache: every answered sample, appended as it completes,
so that a rerun of an unfinished partition answers those samples at once.

File <part_dir>/responses.cache, little-endian:
  header  b"EVKRESP1" | config hash (16 ASCII hex) | range start u64 | range stop u64
  record  qsl_idx u64 (global dataset index) | length u32 | crc32 u32 | payload bytes
The crc covers qsl_idx, length and the payload, so a record torn by a kill (or
garbage after it) fails the check; the file is then cut back to the last whole record.

The global index is stored (not LoadGen's partition-local one) so that a record
means the same sample whatever partition dir it sits in; the header's range
then lets us refuse a cache that belongs to another partition.
"""
from __future__ import annotations

import os
import struct
import sys
import time
import zlib
from pathlib import Path

from .errors import KitError
from .util import disk_full

CACHE_FILE = "responses.cache"
MAGIC = b"EVKRESP1"
_HEADER = struct.Struct("<8s16sQQ")
_RECORD = struct.Struct("<QII")
FSYNC_EVERY_S = 10.0  # a kill loses nothing (data is in the OS after each write); a power cut <= 10 s


def _crc(idx: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(struct.pack("<QI", idx, len(payload))))


class ResponseCache:
    """Open (or create) the cache; holds an offset index, payloads are read on demand
    (SDXL-size payloads for a whole partition would not fit in memory)."""

    def __init__(self, part_dir: Path, chash: str, start: int, stop: int):
        self.path = Path(part_dir) / CACHE_FILE
        self.start, self.stop = start, stop
        self.index: dict[int, tuple[int, int]] = {}  # qsl_idx -> (payload offset, length)
        self._last_sync = time.monotonic()
        header = _HEADER.pack(MAGIC, chash.encode(), start, stop)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            head = os.pread(fd, _HEADER.size, 0)
            if size < _HEADER.size and MAGIC.startswith(head[:len(MAGIC)]):
                # empty, or killed while the header was written: nothing cached yet
                os.ftruncate(fd, 0)
                os.pwrite(fd, header, 0)
                os.fsync(fd)
            else:
                self._check_header(head, chash)
                self._scan(fd, size)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd

    def _check_header(self, head: bytes, chash: str) -> None:
        if len(head) < _HEADER.size or head[:len(MAGIC)] != MAGIC:
            raise KitError(f"{self.path}: not an evalkit response cache (bad header); delete it to recompute "
                           f"its samples")
        _, have, start, stop = _HEADER.unpack(head)
        have = have.decode(errors="replace")
        if have != chash:
            raise KitError(f"{self.path}: response cache from another config (hash {have}, this run {chash}); "
                           f"delete it or use a new LOG_PATH")
        if (start, stop) != (self.start, self.stop):
            raise KitError(f"{self.path}: response cache of samples [{start}, {stop}), this partition is "
                           f"[{self.start}, {self.stop}); delete it or use a new LOG_PATH")

    def _scan(self, fd: int, size: int) -> None:
        off = _HEADER.size
        with os.fdopen(os.dup(fd), "rb") as f:
            f.seek(off)
            while True:
                head = f.read(_RECORD.size)
                if len(head) < _RECORD.size:
                    break
                idx, n, crc = _RECORD.unpack(head)
                payload = f.read(n) if off + _RECORD.size + n <= size else b""
                if len(payload) != n or _crc(idx, payload) != crc:
                    break
                if not self.start <= idx < self.stop:  # crc-valid, so written by someone: not ours
                    raise KitError(f"{self.path}: record for sample {idx} outside this partition "
                                   f"[{self.start}, {self.stop}); delete the cache")
                self.index[idx] = (off + _RECORD.size, n)
                off += _RECORD.size + n
        if off < size:
            os.ftruncate(fd, off)
            os.fsync(fd)
            print(f"warning: {self.path}: dropped {size - off} bytes of an incomplete record at the end "
                  f"(killed mid-write); {len(self.index)} cached responses kept", file=sys.stderr)

    def __contains__(self, idx: int) -> bool:
        return idx in self.index

    def __len__(self) -> int:
        return len(self.index)

    def get(self, idx: int) -> bytes:
        off, n = self.index[idx]
        data = os.pread(self.fd, n, off)
        if len(data) != n:
            raise KitError(f"{self.path}: cached response of sample {idx} is cut short; delete the cache")
        return data

    def append(self, items: list[tuple[int, bytes]]) -> None:
        """items: (global qsl_idx, payload bytes). One write per call (a batch)."""
        buf = bytearray()
        for idx, payload in items:
            buf += _RECORD.pack(idx, len(payload), _crc(idx, payload)) + payload
        off = os.lseek(self.fd, 0, os.SEEK_END)
        view = memoryview(buf)
        try:
            while view:  # unbuffered: in the OS page cache (safe from a kill) once this returns
                view = view[os.write(self.fd, view):]
        except OSError as e:
            e.filename = e.filename or str(self.path)
            raise disk_full(e, self.path) or KitError(f"{self.path}: cannot append to the response cache "
                                                      f"({e.strerror})") from None
        for idx, payload in items:
            self.index[idx] = (off + _RECORD.size, len(payload))
            off += _RECORD.size + len(payload)
        now = time.monotonic()
        if now - self._last_sync >= FSYNC_EVERY_S:
            os.fsync(self.fd)
            self._last_sync = now

    def close(self) -> None:
        if self.fd >= 0:
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1

    def delete(self) -> None:
        """After the manifest: the LoadGen log holds every response, the cache is only disk."""
        self.close()
        self.path.unlink(missing_ok=True)
