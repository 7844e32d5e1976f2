"""The sample images a submission's accuracy dir must hold (checker REQUIRED_ACC_BENCHMARK).

The checker wants `images/<qsl_idx>.png` for ten round-specific ids plus a captions file
(facts sheet §1.4); the reference's accuracy script (tools/accuracy_coco.py
--compliance-images-path) dumps them for the ids in its tools/sample_ids.txt. The kit saves the
union of every round's ids that the run covers, so one run serves any round; captions.txt lists
them as the reference writes it ("<id>  <caption>").

    python -m text_to_image.sdxl.images RUN_DIR [--dataset DIR] [--ids sample_ids.txt]

streams the run's merged log (never loading it whole) and writes RUN_DIR/images/; `--ids` takes a
round's sample_ids.txt as the reference ships it instead of the lists below.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from evalkit.errors import KitError

# Each round's ids, with where they come from (mlcommons/inference; checker = the v6.1 submission
# checker's tools/submission/submission_checker/constants.py REQUIRED_ACC_BENCHMARK at b66003e1,
# sample_ids.txt = text_to_image/tools/sample_ids.txt at the commit named).
SAMPLE_IDS: dict[str, tuple[int, ...]] = {
    "v4.0": (4459, 4015, 2705, 1682, 4048, 4683, 3757, 1578, 3319, 95),
    "v4.1": (4655, 2569, 1303, 109, 4509, 3009, 2179, 1826, 2094, 3340),
    "v5.0": (4459, 4015, 2705, 1682, 4048, 4683, 3757, 1578, 3319, 95),
    "v5.1": (2747, 2235, 2165, 1515, 1538, 1367, 2419, 4629, 3657, 4532),
    "v6.0": (1311, 2476, 3644, 2188, 4114, 52, 388, 1195, 3427, 2289),
    "v6.1": (4475, 3627, 1046, 4937, 3867, 1671, 3789, 1206, 4111, 3093),
}
SOURCES: dict[str, str] = {
    "v4.0": "sample_ids.txt at 8e36925b (#1560, submission checker version 4.0)",
    "v4.1": "sample_ids.txt at a536cd2b (#1736, update for v4.1)",
    "v5.0": "checker REQUIRED_ACC_BENCHMARK['stable-diffusion-xl']['v5.0'] (the v4.0 ids; sample_ids.txt at "
            "5d83ed5d, #2034, held other ids)",
    "v5.1": "checker REQUIRED_ACC_BENCHMARK v5.1 = sample_ids.txt at 0910c6e3 (#2204)",
    "v6.0": "checker REQUIRED_ACC_BENCHMARK v6.0 = sample_ids.txt at f131a0d2 (#2437)",
    "v6.1": "sample_ids.txt at 4b790a61 (#2610, constants for v6.1, seed 3234044599); the checker at "
            "b66003e1 lists no SDXL v6.1 images yet, so it asks for none in a v6.1 submission",
}


def required_ids() -> list[int]:
    return sorted({i for ids in SAMPLE_IDS.values() for i in ids})


def read_sample_ids(path: Path) -> tuple[int, ...]:
    """A round's ids as the reference ships them: text_to_image/tools/sample_ids.txt, one id a line."""
    path = Path(path)
    try:
        lines = path.read_text().split()
    except (OSError, UnicodeDecodeError) as e:
        raise KitError(f"cannot read the sample ids {path} ({type(e).__name__}: {e})") from None
    if not lines or not all(t.isdigit() for t in lines):
        raise KitError(f"{path} is not a sample_ids.txt (one qsl_idx a line, as the reference's "
                       f"text_to_image/tools/sample_ids.txt)")
    return tuple(int(t) for t in lines)


def save_sample_images(pairs, captions: list[str], out_dir: Path, side: tuple[int, int],
                       ids: list[int] | None = None) -> list[int]:
    """Write <out_dir>/<id>.png for the wanted ids found in `pairs` ((qsl_idx, uint8 payload),
    first occurrence wins) and captions.txt; returns the ids written."""
    from PIL import Image

    want = set(required_ids() if ids is None else ids)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    done: list[int] = []
    for q, payload in pairs:
        if q in want and q not in done:
            img = np.asarray(payload, dtype=np.uint8).reshape(side[0], side[1], 3)
            Image.fromarray(img, "RGB").save(out_dir / f"{q}.png")
            done.append(q)
    done.sort()
    (out_dir / "captions.txt").write_text("".join(f"{q}  {captions[q]}\n" for q in done))
    return done


def main(argv=None) -> int:
    from evalkit.accuracy_log import decode_payloads
    from evalkit.rundir import GATHER_INFO, MERGED

    from .benchmark import BENCHMARK, read_captions

    ap = argparse.ArgumentParser(prog="python -m text_to_image.sdxl.images", description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--dataset", type=Path, help="dataset dir (default: the run's)")
    ap.add_argument("--ids", type=Path,
                    help="a round's sample_ids.txt, one id a line (default: the ids of every round, v4.0-v6.1)")
    a = ap.parse_args(argv)
    try:
        info = json.loads((a.run_dir / GATHER_INFO).read_text())
    except (OSError, ValueError):
        print(f"error: {a.run_dir} has no readable {GATHER_INFO}; gather the run first", file=sys.stderr)
        return 2
    try:
        dataset = Path(a.dataset or info["dataset"])
        captions = read_captions(dataset)
        side = BENCHMARK.image_shape(Path(info["model_path"]))
        pairs = ((q, np.frombuffer(p, np.uint8)) for q, p in decode_payloads(a.run_dir / MERGED))
        ids = list(read_sample_ids(a.ids)) if a.ids else None
        done = save_sample_images(pairs, captions, a.run_dir / "images", side, ids)
    except KitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{len(done)} sample images in {a.run_dir / 'images'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
