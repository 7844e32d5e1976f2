"""Cheap checks of a Hugging Face / diffusers checkpoint dir before a library reads it.

transformers, diffusers, tokenizers and safetensors report a bad file each in their own way: a
Rust error without the file name, a traceback, a dir listing, or nothing at all (an empty
merges.txt is a tokenizer without merges). These checks read each file's header only (a
safetensors header, a JSON file, a text file's encoding) and name the first bad file:

- no file is empty;
- every .json file is a UTF-8 JSON document;
- every .txt file is UTF-8 text; merges.txt one pair of tokens a line;
- every .safetensors file is whole: its header's tensors cover the file to the byte;
- a tokenizer dir holds tokenizer_config.json and the files of one tokenizer kind
  (tokenizer.json, vocab.json + merges.txt, vocab.txt or a SentencePiece model).

Used by the LLMs (language/) and SDXL (text_to_image/sdxl), for checkpoints and SDXL's CLIP scorer: a core
helper, so no model folder imports another's.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

from evalkit.errors import KitError
from evalkit.util import file_ends

MAX_HEADER = 100 << 20  # a safetensors header larger than this is not one
TOKENIZER_KINDS = (("tokenizer.json",), ("vocab.json", "merges.txt"), ("vocab.txt",), ("tokenizer.model",),
                   ("spiece.model",))


def safetensors_problem(path: Path) -> str | None:
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return "is too short for a safetensors file"
            n = struct.unpack("<Q", head)[0]
            if n > min(size - 8, MAX_HEADER):
                return f"is not a whole safetensors file (its header length {n} exceeds the file's {size} bytes)"
            header = json.loads(fh.read(n).decode("utf-8"))
    except OSError as e:
        return f"is unreadable ({e.strerror})"
    except (UnicodeDecodeError, ValueError):
        return "is not a safetensors file (its header is not JSON)"
    if not isinstance(header, dict):
        return "is not a safetensors file (its header is not a JSON object)"
    try:
        end = max([int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"] or [0])
    except (KeyError, TypeError, ValueError, IndexError):
        return "is not a safetensors file (a tensor without data_offsets)"
    if 8 + n + end != size:
        return (f"is truncated or padded: its header places the tensors up to byte {8 + n + end}, "
                f"the file has {size}")
    return None


def file_problem(path: Path) -> str | None:
    """What is wrong with one file of a checkpoint dir, from its kind (suffix), or None."""
    ends = file_ends(path)
    if isinstance(ends, str):
        return ends
    suffix = path.suffix
    if suffix == ".safetensors":
        return safetensors_problem(path)
    if suffix in (".json", ".txt"):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            return f"is not UTF-8 text (byte {e.start})"
        except OSError as e:
            return f"is unreadable ({e.strerror})"
        if suffix == ".json":
            try:
                json.loads(text)
            except ValueError as e:
                return f"is not valid JSON ({e})"
        elif path.name == "merges.txt":
            return merges_problem(text)
    return None


def merges_problem(text: str) -> str | None:
    """BPE merges: an optional '#version' line, then one pair of tokens a line. A file cut short ends
    in half a pair (the tokenizer library would fail without naming the file, or take it silently)."""
    for no, line in enumerate(text.split("\n"), 1):
        if no == 1 and line.startswith("#version"):
            continue
        if line and len(line.split(" ")) != 2:
            return f"line {no} is not a pair of tokens ({line[:40]!r}): truncated or not a BPE merges file"
    return None


def check_dir(path: Path, what: str, recursive: bool = False) -> None:
    """KitError naming the first bad file of the checkpoint dir `path` (see the module doc)."""
    path = Path(path)
    files = sorted(path.rglob("*") if recursive else path.iterdir())
    for f in files:
        if f.is_file() and not any(part.startswith(".") for part in f.relative_to(path).parts):
            problem = file_problem(f)
            if problem is not None:
                raise KitError(f"{what}: {f} {problem}; restore the published file.")


def check_tokenizer_dir(path: Path, what: str) -> None:
    """A tokenizer dir: its files are sound (check_dir) and it holds tokenizer_config.json and the
    files of one tokenizer kind; a missing one is named."""
    path = Path(path)
    check_dir(path, what)
    if not (path / "tokenizer_config.json").is_file():
        raise KitError(f"{what}: {path / 'tokenizer_config.json'} is missing (it sets the special tokens and "
                       f"the length limit); restore the published file.")
    if any(all((path / f).is_file() for f in kind) for kind in TOKENIZER_KINDS):
        return
    partial = next((kind for kind in TOKENIZER_KINDS if any((path / f).is_file() for f in kind)), TOKENIZER_KINDS[0])
    missing = [f for f in partial if not (path / f).is_file()]
    raise KitError(f"{what}: {path / missing[0]} is missing; restore the published tokenizer files.")
