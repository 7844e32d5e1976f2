"""LibriSpeech as the speech references lay it out (RNN-T's dev-clean-wav.json, Whisper's
dev-all-repack.json): the manifest's kept entries and the WAV header check, shared by both models."""
from __future__ import annotations

import json
from pathlib import Path

from evalkit.errors import KitError

SAMPLE_RATE = 16000


def kept_entries(root: Path, manifest: str, max_duration: float, layout: str) -> tuple[Path, list[tuple[int, str, str]]]:
    """The manifest's path and its entries of original_duration <= max_duration, in order, as (entry
    number, the speed-1 file's fname, transcript). `layout` says what the dataset dir must hold (for
    the one-line errors)."""
    root = Path(root)
    f = root / manifest
    if not root.is_dir():
        raise KitError(f"LibriSpeech dataset directory {root} does not exist; put {manifest} and the "
                       f"{layout} there or pass the right --dataset.")
    if not f.is_file():
        raise KitError(f"{f} not found; the dataset dir must hold {manifest} next to its {layout}.")
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise KitError(f"cannot read {f}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if not isinstance(data, list) or not data:
        raise KitError(f"{f} is not a non-empty JSON list of utterances")
    kept = []
    for i, u in enumerate(data):
        try:
            if float(u["original_duration"]) > max_duration:
                continue
            wavs = [x["fname"] for x in u["files"] if float(x.get("speed", 1)) == 1.0]
            transcript = u["transcript"]
        except (KeyError, TypeError, ValueError):
            raise KitError(f"{f} entry {i} lacks original_duration, files[].fname or transcript") from None
        if len(wavs) != 1 or not isinstance(transcript, str):
            raise KitError(f"{f} entry {i}: expected one speed-1 file and a transcript string")
        kept.append((i, wavs[0], transcript))
    return f, kept


def wav_problem(path: Path, set_name: str) -> str | None:
    """What is wrong with a WAV file, from its header alone (a few bytes: cheap for every file
    before the model loads), or None: RIFF/WAVE, 16-bit PCM fmt at 16 kHz, a data chunk that the
    file holds whole."""
    import struct

    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return "is not a RIFF/WAVE file" if size else "is empty"
            fmt = None
            while True:
                chunk = fh.read(8)
                if len(chunk) < 8:
                    return "has no data chunk (truncated?)"
                cid, n = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if cid == b"fmt ":
                    fmt = fh.read(min(n, 16))
                    if len(fmt) < 16:
                        return "has a truncated fmt chunk"
                    fh.seek(n - 16 + (n & 1), 1)
                elif cid == b"data":
                    if fmt is None:
                        return "has its data chunk before its fmt chunk"
                    tag, _channels, rate, _, align, bits = struct.unpack("<HHIIHH", fmt)
                    if tag not in (1, 0xFFFE) or bits != 16:
                        return f"is not 16-bit PCM (format {tag}, {bits} bits)"
                    if rate != SAMPLE_RATE:
                        return f"is {rate} Hz; the {set_name} set is {SAMPLE_RATE} Hz"
                    if fh.tell() + n > size:
                        return f"is truncated: its data chunk has {n} bytes, the file ends {fh.tell() + n - size} bytes short"
                    if n == 0 or n % max(1, align):
                        return f"has a data chunk of {n} bytes, not a whole number of {align}-byte frames"
                    return None
                else:
                    fh.seek(n + (n & 1), 1)
    except FileNotFoundError:
        return "is missing"
    except OSError as e:
        return f"is unreadable ({e.strerror})"


def check_wavs(wavs, start: int, stop: int, set_name: str, source: str) -> None:
    """The WAV headers of wavs[start:stop] (a missing, empty, foreign or truncated file), before the model
    loads: one line naming the file and its qsl_idx. `source`: where a good copy comes from."""
    for i in range(start, stop):
        problem = wav_problem(wavs[i], set_name)
        if problem is not None:
            hint = ("restore it before running (a skip would shift every later index)" if problem == "is missing"
                    else f"replace it with {source}")
            raise KitError(f"audio file {wavs[i]} (qsl_idx {i}) {problem}; {hint}")
