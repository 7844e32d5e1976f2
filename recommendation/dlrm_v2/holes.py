"""Criteo day-23 files of real size that cost little disk: what is zero is left as a hole.

The DLRM-v2 scale variant (issue 30) has the real 89M validation pairs: 178M rows of day 23, whose
multi-hot file alone is 152 GB (214 int32 indices a row). Its indices are all 0 and the unread half
of every file is 0, so those bytes are never written: the file is extended past them (a sparse file
on ext4, xfs, btrfs, tmpfs; a file system without holes stores real zeros, the same bytes).

* `write_npy`: a .npy whose first rows repeat a block and whose other rows are zero.
* `write_zero_npz`: an uncompressed .npz (np.savez's layout, ZIP64 for members over 4 GB) of
  all-zero int32 members. A zip member carries the CRC-32 of its bytes; the CRC of a header followed
  by L zero bytes is computed in O(log L) (`crc32_zeros`), so no zero byte is ever produced.
"""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np

_CRC_POLY = 0xEDB88320  # CRC-32 (zip, zlib), reflected


def _gf2_times(mat: list[int], vec: int) -> int:
    out, i = 0, 0
    while vec:
        if vec & 1:
            out ^= mat[i]
        vec >>= 1
        i += 1
    return out


def _gf2_square(mat: list[int]) -> list[int]:
    return [_gf2_times(mat, mat[i]) for i in range(32)]


def crc32_zeros(crc: int, length: int) -> int:
    """zlib.crc32(data + bytes(length)) given crc = zlib.crc32(data), without the zeros.

    The CRC register after a zero byte is a linear map of the register before it (over GF(2)), so
    `length` zero bytes are that map's length-th power, taken by repeated squaring. zlib's final
    inversion is undone first and redone after."""
    if length <= 0:
        return crc
    reg = crc ^ 0xFFFFFFFF
    op = [_CRC_POLY] + [1 << i for i in range(31)]  # one zero bit
    for _ in range(3):
        op = _gf2_square(op)  # 2, 4, 8 bits: one zero byte
    while length:
        if length & 1:
            reg = _gf2_times(op, reg)
        length >>= 1
        if length:
            op = _gf2_square(op)
    return reg ^ 0xFFFFFFFF


def _npy_header(dtype, shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                               "fortran_order": False, "shape": tuple(int(s) for s in shape)})
    return buf.getvalue()  # magic, version 1.0, the dict padded to 64 bytes


def write_npy(path: Path, shape: tuple[int, ...], dtype, block: np.ndarray | None = None,
              filled_rows: int = 0, chunk_bytes: int = 64 << 20) -> None:
    """A C-order .npy of `shape`: rows [0, filled_rows) are `block` repeated (its last copy cut),
    the rest zero and not written (a hole)."""
    header = _npy_header(dtype, shape)
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
    total = len(header) + int(shape[0]) * row_bytes
    with open(path, "wb") as f:
        f.write(header)
        if block is not None and filled_rows:
            b = np.ascontiguousarray(block, dtype=dtype)
            if b.shape[1:] != tuple(shape[1:]):
                raise ValueError(f"block rows {b.shape[1:]} do not fit the array's {tuple(shape[1:])}")
            reps = max(1, chunk_bytes // max(1, b.nbytes))
            chunk = memoryview(np.concatenate([b] * reps).tobytes() if reps > 1 else b.tobytes())
            left = filled_rows * row_bytes
            while left:
                piece = chunk[:min(left, len(chunk))]
                f.write(piece)
                left -= len(piece)
        f.truncate(total)


def write_zero_npz(path: Path, members: list[tuple[str, object, tuple[int, ...]]]) -> None:
    """An uncompressed .npz (ZIP64) whose members "<name>.npy" are all-zero arrays (dtype, shape)."""
    local_sig, central_sig = 0x04034B50, 0x02014B50
    dos_date = 0x21  # 1980-01-01, 00:00
    entries = []
    with open(path, "wb") as f:
        for name, dtype, shape in members:
            fname = f"{name}.npy".encode()
            header = _npy_header(dtype, shape)
            zeros = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            size = len(header) + zeros
            crc = crc32_zeros(zlib.crc32(header), zeros)
            offset = f.tell()
            extra = struct.pack("<HHQQ", 1, 16, size, size)
            f.write(struct.pack("<IHHHHHIIIHH", local_sig, 45, 0, 0, 0, dos_date, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                                len(fname), len(extra)))
            f.write(fname + extra + header)
            f.seek(zeros, io.SEEK_CUR)  # the member's zeros: a hole
            entries.append((fname, crc, size, offset))
        cd_start = f.tell()
        for fname, crc, size, offset in entries:
            extra = struct.pack("<HHQQQ", 1, 24, size, size, offset)
            f.write(struct.pack("<IHHHHHHIIIHHHHHII", central_sig, 45, 45, 0, 0, 0, dos_date, crc, 0xFFFFFFFF,
                                0xFFFFFFFF, len(fname), len(extra), 0, 0, 0, 0, 0xFFFFFFFF))
            f.write(fname + extra)
        cd_end = f.tell()
        n = len(entries)
        f.write(struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, n, n, cd_end - cd_start, cd_start))
        f.write(struct.pack("<IIQI", 0x07064B50, 0, cd_end, 1))
        f.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, min(n, 0xFFFF), min(n, 0xFFFF),
                            min(cd_end - cd_start, 0xFFFFFFFF), 0xFFFFFFFF, 0))
