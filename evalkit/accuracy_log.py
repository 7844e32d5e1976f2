"""Streaming reader/writer for LoadGen's mlperf_log_accuracy.json.

LoadGen writes "[", then one entry per line ("{ "seq_id" : 0, "qsl_idx" : 1,
"data" : "HEX" }" plus optional token_count/token_data), commas between, then
"]". Reading line by line keeps memory bounded by one entry, whatever the file
size (a full SDXL log is ~31 GB).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Iterator

from .errors import KitError


def _parse(raw: bytes, label: str, where: str) -> dict:
    s = raw.strip()
    if s.endswith(b","):
        s = s[:-1]
    try:
        e = json.loads(s.decode("ascii"))
        int(e["qsl_idx"]), int(e["seq_id"]), str(e["data"])
    except (ValueError, KeyError, TypeError):
        raise KitError(f"{label}: corrupt entry at {where}") from None
    return e


def iter_entries(path: Path, what: str = "", offsets: bool = False) -> Iterator:
    """Yield each entry dict (or (byte offset, entry) with offsets=True); KitError naming
    the file on any corruption or truncation."""
    label = f"{what} {path}".strip()
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise KitError(f"{label}: accuracy log is missing") from None
    with f:
        first = f.readline()
        if first.strip() != b"[":
            raise KitError(f"{label}: not a LoadGen accuracy log (first line is not '[')")
        closed = False
        lineno = 1
        pos = len(first)
        for line in f:
            lineno += 1
            off, pos = pos, pos + len(line)
            s = line.strip()
            if not s:
                continue
            if closed:
                raise KitError(f"{label}: unexpected content after ']' at line {lineno}")
            if s == b"]":
                closed = True
                continue
            e = _parse(s, label, f"line {lineno}")
            yield (off, e) if offsets else e
        if not closed:
            raise KitError(f"{label}: truncated (no closing ']'); the run that wrote it did not finish")


def entry_at(f: IO[bytes], offset: int, label: str) -> dict:
    """The entry starting at a byte offset that iter_entries(offsets=True) reported."""
    f.seek(offset)
    return _parse(f.readline(), label, f"byte {offset}")


def format_entry(e: dict) -> str:
    """One entry in LoadGen's exact spacing, keys in their original order."""
    return "{ " + ", ".join(f'"{k}" : {json.dumps(v)}' for k, v in e.items()) + " }"


class Writer:
    """Writes entries in LoadGen's layout to an open text file."""

    def __init__(self, f: IO[str]):
        self.f = f
        self.n = 0
        f.write("[\n")

    def write(self, e: dict) -> None:
        if self.n:
            self.f.write(",\n")
        self.f.write(format_entry(e))
        self.n += 1

    def close(self) -> None:
        self.f.write("\n]\n" if self.n else "]\n")


def decode_payloads(path: Path):
    """(qsl_idx, payload bytes) for every entry of a merged log, in file order."""
    for e in iter_entries(path):
        try:
            yield int(e["qsl_idx"]), bytes.fromhex(e["data"])
        except ValueError:
            raise KitError(f"{path}: entry qsl_idx={e['qsl_idx']} has a non-hex payload") from None
