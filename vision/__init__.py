"""Vision models (ResNet50, RetinaNet, 3D-UNet) and what they share."""
from __future__ import annotations

from pathlib import Path


def synthetic_needs_config(dataset: Path, model_path: Path | None, name: str) -> None:
    """A synthetic set's tiny checkpoint records its input geometry in `name` (the real checkpoint
    has none): on a synthetic set its absence is named, instead of the real model's geometry being
    assumed (a tiling error, or a run that scores a FAIL)."""
    from evalkit.errors import KitError
    from evalkit.manifest import SYNTHETIC_MARKER

    if model_path is None or not (Path(dataset) / SYNTHETIC_MARKER).is_file():
        return
    p = Path(model_path)
    cfg = (p if p.is_dir() else p.parent) / name
    if not cfg.is_file():
        raise KitError(f"{cfg} is missing: the synthetic set's checkpoint records its input geometry there "
                       f"(the real checkpoint has none); restore it or write the set again.")
