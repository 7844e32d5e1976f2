"""The probe: a run that scores K samples spread over the set, never a PASS.

`evalkit explore` (evalkit/explore.py) measures each grid point's accuracy on a probe
before a team commits machines to the full run. The probe samples are K of the
n_count samples a full run would score, at the middle of K equal strata of
0..n_count-1: a pure function of (n_count, K), so every point of a sweep, and every
rerun, scores the same qsl indices, and a later full run scores them too.

A probe run is an ordinary run (plan, launcher, partitions, resume, gather) over a view
of the dataset whose sample i is the set's sample indices[i]; its config carries
{"probe": {"n": K, "of": n_count, "indices": [...]}} (another config hash than the full run),
gather writes the set's own qsl_idx into its merged log, and its metrics are a probe's:
"probe within target" or "probe below target", never PASS (check refuses it).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .benchmark import Dataset
from .errors import KitError


def probe_indices(n_count: int, k: int, groups=None) -> list[int]:
    """The probe's qsl indices: K units spread over 0..n_count-1, at the middle of K equal strata.
    groups: the scoring unit of each sample (Dataset.groups(), BERT's questions) or None; then the
    probe takes K whole units (every sample of each) among those lying wholly inside n_count."""
    units: list[list[int]]
    if groups is None:
        units = None
        total = n_count
    else:
        by: dict = {}
        for i, g in enumerate(groups):
            by.setdefault(g, []).append(i)
        units = [v for v in by.values() if max(v) < n_count]
        total = len(units)
    if not 1 <= k <= total:
        what = ("the samples the full run scores" if groups is None else
                f"the scoring units, e.g. questions, lying wholly in the first {n_count} samples")
        raise KitError(f"{k} is outside [1, {total}] ({what})")
    picks = [(2 * j + 1) * total // (2 * k) for j in range(k)]
    return picks if units is None else sorted(i for j in picks for i in units[j])


def config_indices(config: dict) -> list[int] | None:
    """The probe's qsl indices of a run config (recorded there by the plan), or None for an ordinary run."""
    pr = config.get("probe")
    return None if not pr else [int(i) for i in pr["indices"]]


class ProbeView(Dataset):
    """Sample i of the probe run is sample indices[i] of the set (the runner and gather count
    0..K-1; gather writes indices[i] as the merged log's qsl_idx)."""

    def __init__(self, inner: Dataset, indices: list[int]):
        self.inner, self.indices = inner, list(indices)
        self.size = len(self.indices)
        self.index_file = inner.index_file

    def load(self, index: int) -> Any:
        return self.inner.load(self.indices[index])

    def check_available(self, start: int, stop: int) -> None:
        for i in range(start, stop):
            g = self.indices[i]
            self.inner.check_available(g, g + 1)

    def __getattr__(self, name):  # whatever else a model's dataset offers (only called for missing names)
        return getattr(self.inner, name)


def score(run_dir: Path, accuracy_target: str | None = None) -> dict:
    """A gathered probe run -> its metrics and each target row, as "probe within/below target"."""
    from . import registry, targets
    from .accuracy_log import decode_payloads
    from .gather import verify
    from .manifest import read_synthetic
    from .rundir import MERGED
    from .scoring import clean_pairs

    run_dir = Path(run_dir)
    info = verify(run_dir)
    config = info["config"]
    ids = config_indices(config)
    if ids is None:
        raise KitError(f"run {run_dir} is not a probe run (its config has no probe)")
    bench = registry.get(info["model"])
    dataset, model_path = Path(info["dataset"]), Path(info["model_path"])
    of = int(config["probe"]["of"])
    merged = run_dir / MERGED
    got = []

    def pairs():
        for q, arr in clean_pairs(bench, decode_payloads(merged), of, str(merged)):
            got.append(q)
            yield q, arr

    metrics = bench.score_subset(pairs(), dataset, ids, of, model_path)
    if sorted(got) != ids:
        raise KitError(f"{merged}: its qsl indices are not the probe's {len(ids)} samples of {of}; rerun the probe")
    target = accuracy_target or bench.default_accuracy_target
    if target not in bench.checker_names:
        raise KitError(f"--accuracy_target {target} is not defined for {bench.name} (choose {', '.join(bench.checker_names)})")
    mt = targets.get(bench.checker_names[target])
    synth = read_synthetic(dataset)
    size = int(synth["n"]) if synth else bench.dataset_size
    override = {k: float(v) for k, v in synth["reference"].items()} if synth else None
    from .check import low_precision  # a synthetic probe outside fp32 is judged as check judges the full run

    low = low_precision(bench.name, config.get("data_type", "fp32"), synth,
                        (config.get("quantization") or {}).get("quantizer")) if synth else None
    verdict = targets.evaluate(mt, metrics, scale={m: len(ids) / size for m in mt.metrics()},
                               reference_override=override,
                               ratio_override=low and {k: x["floor"] / 100 for k, x in low["metrics"].items()})
    within = verdict.passed
    return {"metrics": {k: (float(v) if isinstance(v, (int, float)) else v) for k, v in metrics.items()},
            "rows": verdict.rows, "within_target": within,
            "label": "probe within target" if within else "probe below target",
            "checker_name": mt.checker_name,
            "accuracy_target": target, "n": int(config["probe"]["n"]), "samples": len(ids), "of": of, "synthetic": bool(synth),
            "merged_sha256": info["merged"]["sha256"], "config_hash": info["config_hash"],
            "synthetic_low_precision": low}


def format_table(result: dict) -> str:
    from .targets import label  # RNN-T's checker metric "WER" is the accuracy: named as it is

    head = (f"probe: {result['samples']} of {result['of']} samples ({result['checker_name']}, accuracy target "
            f"{result['accuracy_target']}%)" + (" -- SYNTHETIC data" if result["synthetic"] else ""))
    lines = [head]
    for r in result["rows"]:
        lines.append(f"  {label(r['metric'])}: {r['value']:.4f} ({'>=' if r['kind'] == 'min' else '<='} {r['target']:.4f}) "
                     f"{'within' if r['pass'] else 'outside'}")
    lines.append(f"PROBE: {result['label']} (not a PASS: only the full set is checked)")
    return "\n".join(lines)


def gather_and_score(run_dir: Path, accuracy_target: str | None = None) -> dict:
    """Gather a probe run whose partitions are all complete (again only when its record no longer
    holds), then score it; the result is also written to <run>/probe.json."""
    from .gather import gather, is_current
    from .util import atomic_write_json

    run_dir = Path(run_dir)
    if not is_current(run_dir, [run_dir]):
        gather([run_dir], force=True)
    result = score(run_dir, accuracy_target)
    atomic_write_json(run_dir / PROBE_RESULT, result)
    return result


PROBE_RESULT = "probe.json"


def finish_probe(plan) -> int:
    """`evalkit run --probe K`: like finish_run, but the result is a probe's, never PASS/FAIL."""
    from . import rundir
    from .launcher import finish_run

    spec = plan.spec
    present = rundir.complete_partitions([spec.log_path])
    if any(p not in present for p in range(spec.n_partitions)):
        return finish_run(plan, no_check=True)  # says which partitions are missing
    print(format_table(gather_and_score(spec.log_path, spec.accuracy_target)))
    print(f"run dir: {spec.log_path}")
    return 0
