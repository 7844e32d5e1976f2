"""The LLM datasets published as pandas pickles (Llama-2 OpenOrca, Mixtral 15k), opened safely.

Unpickling runs code: a .pkl can execute anything the moment it is read. So a pickle is read
only through the core's one unpickler (evalkit.safeload, allow-list PANDAS_FRAME: a DataFrame of
numpy/object columns as pandas 1.x-3.x write it, nothing else), and, as a second fence, only from
inside the kit's data dir (<repo>/data: what `data add` and DVC put there, the team's own files);
anywhere else the same table must be a parquet copy (<stem>.parquet, same columns), which holds
data only. The synthetic sets write both.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from evalkit.errors import KitError
from evalkit.util import ROOT

TRUSTED_ROOT = ROOT / "data"


def _inside(path: Path, root: Path) -> bool:
    for p in (Path(os.path.abspath(path)), Path(path).resolve()):
        try:
            p.relative_to(root)
        except ValueError:
            return False
    return True


def table_file(root: Path, pickle_name: str) -> Path:
    """The file open_table reads: the pickle inside the kit's data dir, else its parquet copy."""
    root = Path(root)
    if not root.is_dir():
        raise KitError(f"dataset directory {root} does not exist; put {pickle_name} there or pass the right --dataset.")
    pkl, pq = root / pickle_name, root / (Path(pickle_name).stem + ".parquet")
    if pkl.is_file() and _inside(pkl, TRUSTED_ROOT.resolve()) and _inside(pkl, TRUSTED_ROOT):
        return pkl
    if pq.is_file():
        return pq
    if pkl.is_file():
        raise KitError(f"{pkl} is a pickle outside the kit's data dir {TRUSTED_ROOT}; pickles run code when read, "
                       f"so the kit reads them only from there: `python -m evalkit data add` it, or put a "
                       f"parquet copy {pq.name} next to it.")
    raise KitError(f"{pkl} not found (nor {pq.name}); the dataset dir must hold the published pickle.")


def open_table(root: Path, pickle_name: str, columns: Sequence[str]):
    """The dataset's DataFrame (pickle or parquet, see table_file), checked for `columns`."""
    import pandas as pd

    from evalkit import safeload

    f = table_file(root, pickle_name)
    if f.suffix == ".pkl":
        df = safeload.load_pickle(f, safeload.PANDAS_FRAME)  # one-line KitError naming the file
    else:
        df = _read_parquet(f)
    try:  # a pickled frame is built from listed types only, but its parts need not fit together
        ok = isinstance(df, pd.DataFrame) and len(df) > 0 and len(list(df.columns)) > 0
    except Exception:  # noqa: BLE001
        ok = False
    if not ok:
        raise KitError(f"{f} is not a non-empty pandas DataFrame.")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise KitError(f"{f} lacks column(s) {', '.join(missing)}; it is not the published dataset.")
    return df.reset_index(drop=True)


def _read_parquet(f: Path):
    import pandas as pd

    try:
        return pd.read_parquet(f)
    except Exception as e:  # parquet readers raise many types; any of them means a bad file
        raise KitError(f"cannot read {f} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                       f"re-download it.") from None


def write_table(df, root: Path, pickle_name: str) -> None:
    """Synthetic sets: the published pickle plus its parquet copy (readable outside data/). The
    pickle has object columns and an object column index, as the published ones (pandas 1.x/2.x)
    do: pandas 3's default `str` columns pickle as pyarrow buffers, which the kit does not read."""
    import pandas as pd

    root.mkdir(parents=True, exist_ok=True)
    as_published = df.astype({c: object for c in df.columns if pd.api.types.is_string_dtype(df[c].dtype)
                              and df[c].dtype != object})
    as_published.columns = pd.Index(list(df.columns), dtype=object)
    as_published.to_pickle(root / pickle_name)
    df.to_parquet(root / (Path(pickle_name).stem + ".parquet"), index=False)
