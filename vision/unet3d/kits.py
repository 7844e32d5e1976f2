"""KiTS19 preprocessed layout (the reference's preprocess.py output) and DICE as accuracy_kits.py.

<root>/preprocessed_files.pkl = {"file_list": [case, ...], "cases": {case: aux}} with
aux["image_shape"] = (1, D, H, W) and aux["reshaped_affine"]; <root>/<case>.pkl = [image, label]
(image (1, D, H, W) float32, already normalised and padded); <root>/nifti/<case>/segmentation.nii.gz
is the ground truth in the same (D, H, W) grid.

Pickles: unpickling runs whatever code the file names, and these files come from a dataset
download. So they are read only (1) from inside the dataset dir, under case names that cannot
leave it (no '/', no '..'), and (2) through the core's one unpickler (evalkit.safeload, allow-list
KITS19: numpy arrays and plain containers only); anything else is refused with an error naming the file.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from evalkit.errors import KitError
from evalkit.util import file_ends

INDEX = "preprocessed_files.pkl"
_CASE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def load_pickle(path: Path):
    """A KiTS19 pickle through the core's one safe reader: numpy arrays and plain containers only."""
    from evalkit import safeload

    if not os.path.isfile(path):
        raise KitError(f"{path} is missing; restore the preprocessed KiTS19 file, never skip it.")
    return safeload.load_pickle(path, safeload.KITS19)


def read_index(root: Path) -> tuple[list[str], dict]:
    root = Path(root)
    if not root.is_dir():
        raise KitError(f"KiTS19 preprocessed directory {root} does not exist; run the reference "
                       f"preprocess.py into it or pass the right path.")
    f = root / INDEX
    if not f.is_file():
        raise KitError(f"{f} not found; the KiTS19 preprocessed layout keeps its case index there.")
    d = load_pickle(f)
    if not isinstance(d, dict) or not isinstance(d.get("file_list"), list) or not isinstance(d.get("cases"), dict):
        raise KitError(f"{f} is not a preprocessed_files.pkl: expected {{'file_list': [...], 'cases': {{...}}}}.")
    cases = d["file_list"]
    for c in cases:
        if not isinstance(c, str) or not _CASE.match(c) or ".." in c:
            raise KitError(f"{f}: case name {c!r} is not a plain file name; refusing paths outside {root}.")
        if c not in d["cases"] or "image_shape" not in d["cases"][c]:
            raise KitError(f"{f}: case {c} has no image_shape in 'cases'.")
    if not cases:
        raise KitError(f"{f} lists no cases.")
    return cases, d["cases"]


def volume_shape(aux: dict) -> tuple[int, ...]:
    """(D, H, W) of a case: image_shape without its leading channel."""
    s = tuple(int(v) for v in aux["image_shape"])
    while len(s) > 3 and s[0] == 1:
        s = s[1:]
    return s


class KiTS19:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.cases, self.aux = read_index(self.root)
        self.size = len(self.cases)

    def voxels(self, index: int) -> int:
        return int(np.prod(volume_shape(self.aux[self.cases[index]])))

    def load(self, index: int):
        if not 0 <= index < self.size:
            raise KitError(f"case index {index} is outside {self.root / INDEX} ({self.size} cases).")
        case = self.cases[index]
        p = self.root / f"{case}.pkl"
        obj = load_pickle(p)
        image = obj[0] if isinstance(obj, (list, tuple)) else None
        if not isinstance(image, np.ndarray) or image.ndim != 4 or image.shape[0] != 1:
            raise KitError(f"{p} (qsl_idx {index}): expected [image (1, D, H, W), label]; re-run the reference "
                           f"preprocessing.")
        if image.shape[1:] != volume_shape(self.aux[case]):
            raise KitError(f"{p} (qsl_idx {index}): image shape {image.shape} differs from image_shape "
                           f"{tuple(self.aux[case]['image_shape'])} in {INDEX}.")
        return index, np.ascontiguousarray(image, dtype=np.float32)

    def check_available(self, start: int, stop: int) -> None:
        """Before the model loads: each case's pickle (present, a whole pickle at least as large as
        its float32 image) and its ground truth (a readable NIfTI header, a whole gzip stream), so
        that neither a missing input nor a missing label is found after the run."""
        for i in range(start, stop):
            case = self.cases[i]
            p = self.root / f"{case}.pkl"
            problem = pickle_problem(p, 4 * self.voxels(i))
            if problem is None:
                p = segmentation_path(self.root, case)
                problem = nifti_problem(p)
            if problem is not None:
                hint = ("restore it before running (a skip would shift every later index)"
                        if problem == "is missing" else "re-run the reference preprocessing")
                raise KitError(f"{p} (qsl_idx {i}) {problem}; {hint}.")


def pickle_problem(path: Path, min_bytes: int) -> str | None:
    """A preprocessed case from its size and both ends (never unpickled here): a pickle starts with
    PROTO (0x80, protocol 2..5) and ends with STOP ('.'), and holds at least its image's bytes."""
    ends = file_ends(path, 2, 1)
    if isinstance(ends, str):
        return ends
    size, head, last = ends
    if len(head) < 2 or head[0] != 0x80 or not 2 <= head[1] <= 5 or last != b".":
        return ("is not a whole pickle (no protocol header or no STOP at its end: truncated or corrupt); "
                "refusing to unpickle it")
    if size < min_bytes:
        return (f"holds {size} bytes, less than its float32 image's {min_bytes}: truncated or not a preprocessed "
                f"case; refusing to unpickle it")
    return None


def segmentation_path(root: Path, case: str) -> Path:
    return Path(root) / "nifti" / case / "segmentation.nii.gz"


def nifti_problem(path: Path) -> str | None:
    """The ground truth from its header (nibabel reads only the first bytes) and its gzip trailer:
    ISIZE (the last 4 bytes) must be the header plus the volume's bytes. A file whose trailer
    disagrees (several gzip members) is decompressed once to tell."""
    import gzip
    import struct

    import nibabel as nib

    ends = file_ends(path)
    if isinstance(ends, str):
        return ends
    size = ends[0]
    try:
        img = nib.load(str(path))
        want = int(img.dataobj.offset) + int(np.prod(img.shape)) * img.header.get_data_dtype().itemsize
        with open(path, "rb") as fh:
            fh.seek(size - 4)
            isize = struct.unpack("<I", fh.read(4))[0]
        if isize == want % 2**32:
            return None
        with gzip.open(path, "rb") as fh:
            got = 0
            while chunk := fh.read(1 << 20):
                got += len(chunk)
        if got < want:
            return f"holds {got} bytes of NIfTI, its header announces {want} (truncated)"
        return None
    except Exception as e:  # noqa: BLE001 - nibabel/gzip raise many types for a bad file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return f"is not a readable NIfTI file ({type(e).__name__}: {first})"


# --- accuracy ------------------------------------------------------------------------------------
def load_segmentation(root: Path, case: str) -> np.ndarray:
    """Ground truth as accuracy_kits.py reads it: nibabel, get_fdata, cast to uint8."""
    import nibabel as nib

    p = segmentation_path(root, case)
    if not p.is_file():
        raise KitError(f"{p} is missing; the ground truth of case {case} is needed to score it.")
    try:
        # float32 holds the labels 0..2 exactly, at half the memory of the reference's float64
        return nib.load(str(p)).get_fdata(dtype=np.float32).astype(np.uint8)
    except Exception as e:  # noqa: BLE001 - nibabel raises many types for a bad file
        raise KitError(f"cannot read {p} ({type(e).__name__}: {e}); re-create the NIfTI file.") from None


def dice(prediction: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """(kidney, tumour) DICE of get_dice_score: one-hot classes 1 and 2, smooth 1e-6 above and below.
    Counts instead of float64 one-hot volumes: the sums are the same integers."""
    out = []
    for c in (1, 2):
        p, t = prediction == c, target == c
        inter = float(np.count_nonzero(p & t))
        out.append((2.0 * inter + 1e-6) / (float(np.count_nonzero(t)) + float(np.count_nonzero(p)) + 1e-6))
    return out[0], out[1]
