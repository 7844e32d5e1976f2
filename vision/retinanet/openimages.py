"""OpenImages-MLPerf layout, reference preprocessing and COCO bbox mAP.

Layout: <root>/annotations/openimages-mlperf.json (COCO format, 264 categories 0..263) and the
images at <root>/validation/data/<file_name>; the order of "images" is the QSL order.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from evalkit.errors import KitError
from vision.image_files import image_problem

ANNOTATIONS = Path("annotations") / "openimages-mlperf.json"
IMAGES = Path("validation") / "data"


def read_annotations(root: Path) -> dict:
    root = Path(root)
    if not root.is_dir():
        raise KitError(f"OpenImages dataset directory {root} does not exist; prepare the MLPerf OpenImages "
                       f"validation set there ({ANNOTATIONS} + {IMAGES}/) or pass the right path.")
    f = root / ANNOTATIONS
    if not f.is_file():
        raise KitError(f"{f} not found; the OpenImages-MLPerf layout keeps the COCO-format annotations there.")
    try:
        d = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise KitError(f"cannot read {f} ({type(e).__name__}: {e}); re-download it.") from None
    if not isinstance(d, dict) or not isinstance(d.get("images"), list) or not d["images"]:
        raise KitError(f"{f} has no 'images' list; it is not a COCO-format annotation file.")
    for i, im in enumerate(d["images"]):
        if not isinstance(im, dict) or not {"id", "file_name", "height", "width"} <= set(im):
            raise KitError(f"{f}: images[{i}] lacks id/file_name/height/width.")
        name = im["file_name"]
        if not isinstance(name, str) or not name or name.startswith("/") or ".." in name.split("/"):
            raise KitError(f"{f}: images[{i}] file_name {name!r} is not a path inside {root / IMAGES} "
                           f"(absolute or with '..'); refusing to read outside the dataset dir.")
    d.setdefault("annotations", [])
    d.setdefault("categories", [])
    return d


PREPROCESS = ("float32", "uint8")   # the reference's arithmetic; the kit's compact, faster variant


def preprocess_file(path: Path, size: int, preprocess: str = "float32") -> np.ndarray:
    """One image as the model takes it, CHW at size x size.

    "float32" (default): the reference's pre_process_openimages_retinanet, step for step: cv2
    decode, float32 first, BGR -> RGB, INTER_LINEAR resize of the float32 image (never rounded),
    /255 in float32; byte-identical to the reference's sample.
    "uint8": the same steps on the uint8 image, /255 left to the device: 4x smaller and faster to
    make, but cv2's uint8 resize rounds (within 1/255 of the reference; most pixels differ)."""
    import cv2

    if preprocess not in PREPROCESS:
        raise ValueError(f"preprocess={preprocess} is not one of {', '.join(PREPROCESS)}")
    img = cv2.imread(str(path))
    if img is None:
        raise OSError(f"cv2 cannot decode {path}")
    if preprocess == "float32":
        img = np.array(img, dtype=np.float32)
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)   # cv2.imread always gives 3 channels
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)
    if preprocess == "float32":
        img /= np.float32(255.0)
    return np.ascontiguousarray(img.transpose(2, 0, 1))


class OpenImages:
    def __init__(self, root: Path, size: int, preprocess: str = "float32"):
        self.root = Path(root)
        self.size_px = size
        self.preprocess = preprocess
        self.images = read_annotations(self.root)["images"]
        self.size = len(self.images)

    def path(self, i: int) -> Path:
        return self.root / IMAGES / self.images[i]["file_name"]

    def load(self, index: int):
        if not 0 <= index < self.size:
            raise KitError(f"sample index {index} is outside {self.root / ANNOTATIONS} ({self.size} images).")
        p = self.path(index)
        if not p.is_file():
            raise KitError(f"image {p} (qsl_idx {index}) is missing; restore it, never skip it "
                           f"(a skip shifts every later index).")
        try:
            return index, preprocess_file(p, self.size_px, self.preprocess)
        except (OSError, ValueError) as e:
            raise KitError(f"image {p} (qsl_idx {index}) is unreadable ({e}); replace the file.") from None

    def check_available(self, start: int, stop: int) -> None:
        # both ends of every file (vision/image_files.py): missing, empty, foreign or truncated
        # images fail here, before the model loads (cv2 would decode a truncated JPEG silently)
        for i in range(start, stop):
            problem = image_problem(self.path(i))
            if problem is not None:
                hint = ("restore it before running (a skip would shift every later index)"
                        if problem == "is missing" else "replace it with the OpenImages original")
                raise KitError(f"image {self.path(i)} (qsl_idx {i}) {problem}; {hint}.")


# --- accuracy ------------------------------------------------------------------------------------
def detections_from_pairs(pairs, images: list[dict], label: str = "the accuracy log"):
    """accuracy-openimages.py's loop over clean (qsl_idx, float32 payload) pairs -> (COCO result
    rows as one (n, 7) float64 array [image_id, x, y, w, h, score, category], image ids seen,
    images without detections, payloads whose image_idx disagrees with qsl_idx)."""
    rows, seen_ids, no_results, mismatch = [], [], 0, 0
    for qsl_idx, data in pairs:
        if qsl_idx >= len(images):
            raise KitError(f"{label}: qsl_idx {qsl_idx} has no image in the annotations ({len(images)} images)")
        image = images[qsl_idx]
        seen_ids.append(image["id"])
        if data.size < 7:
            no_results += 1  # the reference counts the image, with no detections
            continue
        if data.size % 7:
            raise KitError(f"{label}: the response for qsl_idx {qsl_idx} has {data.size} float32 values, not "
                           f"groups of 7 [image_idx, ymin, xmin, ymax, xmax, score, label]; check the payload dtype")
        d = data.reshape(-1, 7)
        lab = d[:, 6]
        if not np.isfinite(d).all() or (lab < 0).any() or (lab != np.round(lab)).any():
            raise KitError(f"{label}: the response for qsl_idx {qsl_idx} holds NaN/inf or a label that is not a "
                           f"class index; check the payload dtype (float32 groups of 7)")
        # the reference prints an ERROR and goes on with qsl_idx: an index shift scores, it does not crash
        mismatch += int((d[:, 0].astype(np.int64) != qsl_idx).any())
        h, w = float(image["height"]), float(image["width"])
        # same float32 products as the reference (np.float32 * python float), widened afterwards
        ymin, xmin, ymax, xmax = d[:, 1] * h, d[:, 2] * w, d[:, 3] * h, d[:, 4] * w
        out = np.empty((d.shape[0], 7), dtype=np.float64)
        out[:, 0] = image["id"]
        out[:, 1], out[:, 2] = xmin, ymin
        out[:, 3] = (xmax - xmin).astype(np.float64)
        out[:, 4] = (ymax - ymin).astype(np.float64)
        out[:, 5] = d[:, 5]
        out[:, 6] = d[:, 6].astype(np.int64)
        rows.append(out)
    dets = np.concatenate(rows) if rows else np.zeros((0, 7))
    return dets, seen_ids, no_results, mismatch


def _as_result_list(dets: np.ndarray) -> list[dict]:
    return [{"image_id": int(r[0]), "category_id": int(r[6]), "bbox": [float(r[1]), float(r[2]), float(r[3]), float(r[4])],
             "score": float(r[5])} for r in dets]


def _evaluator(gt: dict, dets: np.ndarray, img_ids: list, cat_ids: list | None, evaluator: str):
    """An evaluated + accumulated COCOeval over img_ids (and cat_ids when given)."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress to stdout
        if evaluator == "faster":
            from faster_coco_eval import COCO, COCOeval_faster

            coco_gt = COCO(gt)
            coco_dt = coco_gt.loadRes(_as_result_list(dets))
            ev = COCOeval_faster(coco_gt, coco_dt, iouType="bbox", print_function=lambda *a, **k: None)
        elif evaluator == "pycocotools":
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval

            coco_gt = COCO()
            coco_gt.dataset = gt
            coco_gt.createIndex()
            coco_dt = coco_gt.loadRes(_as_result_list(dets))
            ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        else:
            raise KitError(f"unknown COCO evaluator {evaluator!r}")
        ev.params.imgIds = list(img_ids)
        if cat_ids is not None:
            ev.params.catIds = list(cat_ids)
        ev.evaluate()
        ev.accumulate()
    return ev


def _ap_all(precision: np.ndarray) -> float:
    """stats[0] of COCOeval.summarize: mean precision over IoU 0.5:0.95, recall points and
    categories, area 'all' (index 0), maxDets 100 (index 2), cells that exist (> -1)."""
    s = precision[:, :, :, 0, 2]
    return float(np.mean(s[s > -1])) if (s > -1).any() else -1.0


_JOB: tuple = ()  # (gt, dets, img_ids): handed to forked workers without pickling


def _group_precision(cats: list) -> np.ndarray:
    gt, dets, img_ids = _JOB
    keep = np.isin(dets[:, 6], np.asarray(cats, dtype=np.float64))
    if not keep.any():  # nothing detected in this group: pycocotools gives -1 or 0 cells alike
        sub = dets[:1].copy()
        sub[:, 5] = 0.0  # a placeholder loadRes can take; its category is outside the group
        ev = _evaluator(gt, sub, img_ids, cats, "faster")
    else:
        ev = _evaluator(gt, dets[keep], img_ids, cats, "faster")
    return ev.eval["precision"]


def coco_map(gt: dict, dets: np.ndarray, img_ids: list, evaluator: str = "faster", workers: int = 0) -> float:
    """COCO bbox AP@[.5:.95] (stats[0]) over img_ids, as pycocotools computes it.
    evaluator "pycocotools": the reference's own library, one process. "faster": faster-coco-eval's
    C++ COCOeval; categories are independent in COCO AP, so with workers > 1 (0: one per core for
    large logs) each process evaluates a contiguous group of categories and the precision tables
    are joined in category order before the one mean. tests/test_retinanet_unit.py proves both
    equal to pycocotools to 1e-6."""
    if dets.shape[0] == 0:
        return 0.0  # pycocotools' loadRes cannot take an empty result list
    if evaluator == "pycocotools":
        ev = _evaluator(gt, dets, img_ids, None, evaluator)
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            ev.summarize()
        return float(ev.stats[0])
    if evaluator != "faster":
        raise KitError(f"unknown COCO evaluator {evaluator!r}")
    cats = sorted({int(c["id"]) for c in gt.get("categories", [])})
    if workers == 0:
        workers = min(os.cpu_count() or 1, 8) if dets.shape[0] > 50_000 else 1
    workers = max(1, min(workers, len(cats)))
    if workers == 1:
        return _ap_all(_evaluator(gt, dets, img_ids, None, "faster").eval["precision"])
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    global _JOB
    groups = [list(g) for g in np.array_split(np.asarray(cats), workers)]
    _JOB = (gt, dets, list(img_ids))
    try:
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
            parts = list(pool.map(_group_precision, groups))
    finally:
        _JOB = ()
    return _ap_all(np.concatenate(parts, axis=2))
