"""Score a merged log and compare with the MLPerf targets.

Writes accuracy.txt (lines the submission checker's regexes parse, plus
hash=), accuracy.json, and prints the PASS/FAIL table. Knows nothing about
LoadGen or partitions.
"""
from __future__ import annotations

import time
from pathlib import Path

from . import registry, targets
from .errors import KitError
from .gather import verify
from .rundir import MERGED
from .manifest import read_synthetic
from .scoring import score_log
from .util import atomic_write_json, atomic_write_text, sha256_file

CHECK_ERROR = "check_error.json"  # written when scoring raised a KitError; the report shows the run as ERROR


def _fmt(x) -> str:
    if x is None:
        return "-"
    return f"{x:.6g}" if abs(x) >= 1e5 else f"{x:.4f}"


def low_precision(model: str, data_type: str, synth: dict, quantizer: str | None = None) -> dict | None:
    """A synthetic run outside fp32 (a data type, or a quantizer with a measured synthetic floor): what its
    table must say at once, and the floors it is judged by (targets.SYNTHETIC_LOW_PRECISION,
    targets.SYNTHETIC_QUANTIZED); None for fp32 and for a quantizer whose synthetic answers are the fp32
    ones (judged against the fp32 reference itself)."""
    if quantizer:
        measured = targets.synthetic_quantized_expectation(model, quantizer)
        if measured is None:
            return None
        what, source = f"quantized {quantizer}", "bench/bench_quant.py"
    elif data_type == "fp32":
        return None
    else:
        measured = targets.synthetic_expectation(model, data_type)
        what, source = data_type, "bench/bench_synthetic_dtypes.py"
    out = {"data_type": what, "measured": measured is not None, "source": source, "metrics": {}}
    for k, pct in (measured or {}).items():
        ref, shift = synth["reference"].get(k), synth.get("index_shift", {}).get(k)
        shift_pct = 100.0 * float(shift) / float(ref) if ref and shift is not None else 0.0
        # never below what an index shift (a pipeline bug) scores on this very set
        out["metrics"][k] = {"expected": pct, "index_shift": round(shift_pct, 2),
                             "floor": round(max(targets.SYNTHETIC_FLOOR * pct, shift_pct + 1.0), 2)}
    return out


def _low_precision_lines(low: dict) -> list[str]:
    dt = low["data_type"]
    head = (f"SYNTHETIC {dt}: the references are fp32 outputs of a random-weight model, whose close calls "
            f"{dt} rounding changes without any bug")
    if not low["measured"]:
        return [f"{head}; no {dt} expectation is measured for this model (bench/bench_synthetic_dtypes.py): "
                f"the fp32 target applies, so a FAIL here may be rounding, not a bug; the same set with "
                f"DATA_TYPE=fp32 must PASS"]
    source = low.get("source", "bench/bench_synthetic_dtypes.py")
    return [f"{head}: a correct {dt} pipeline reached {x['expected']:.4g}% of {k}'s reference "
            f"({source}), an index shift {x['index_shift']:.4g}%; judged against "
            f"{x['floor']:.4g}% (MLPerf's ratio is for real data)" for k, x in low["metrics"].items()]


def format_table(result: dict) -> str:
    rows = result["rows"]
    head = (f"{result['model']} ({result['checker_name']}, accuracy target {result['accuracy_target']}%)"
            + (" -- SYNTHETIC data: references are the synthetic model's own outputs" if result["synthetic"] else ""))
    low = result.get("synthetic_low_precision")
    if low:
        head += "\n" + "\n".join(_low_precision_lines(low))
    quant = (result.get("config") or {}).get("quantization")
    if quant:  # evalkit/quantize.py: what was evaluated, by content
        head += (f"\nQUANTIZED: {quant['quantizer']} ({quant.get('library') or 'plug-in'}), N_CALIB={quant['n_calib']}, "
                 f"artifact {str(quant.get('artifact'))[:12]}.., model sha256 {str(quant.get('model_sha256'))[:12]}.."
                 + ("; the synthetic reference is the fp32 model's own output: the quantized model is judged "
                    "against it" if result["synthetic"] else ""))
    hdr = ("metric", "value", "reference", "% of ref", "target", "verdict")
    body = []
    for r in rows:
        pct = "-" if r["pct_of_reference"] is None else f"{r['pct_of_reference']:.2f}%"
        # a partial run's sum-type metric: reference and bound both scaled to its n_count
        ref = _fmt(r["reference"]) + (" (scaled)" if r["scaled"] else "")
        tgt = (">= " if r["kind"] == "min" else "<= ") + _fmt(r["target"])
        body.append((targets.label(r["metric"]), _fmt(r["value"]), ref, pct, tgt, "PASS" if r["pass"] else "FAIL"))
    widths = [max(len(str(x[i])) for x in [hdr] + body) for i in range(len(hdr))]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    sep = "  ".join("-" * w for w in widths)
    lines = [head, fmt.format(*hdr), sep] + [fmt.format(*b) for b in body] + [sep]
    if result["n_count"] < result["dataset_size"]:
        lines.append(f"PARTIAL run: {result['n_count']} of {result['dataset_size']} samples "
                     f"(the checker requires the full dataset for a submission)")
    if low:  # the line scripts grep says it too: a low-precision synthetic verdict is not MLPerf's
        how = "against the measured floor above" if low["measured"] else "against the fp32 reference; see above"
        lines.append(f"RESULT: {result['verdict']} (synthetic {low['data_type']}, {how})")
    else:
        lines.append(f"RESULT: {result['verdict']}")
    return "\n".join(lines)


def _same_dataset(run_dir: Path, dataset: Path, config: dict) -> None:
    """The dataset scored against is, file by file, the one the partitions ran on (labels included)."""
    from .identity import IDENTITY, dataset_identity, describe_difference, read_identity
    from .manifest import dataset_files

    files = dataset_files(dataset)
    if dataset_identity(files) != config.get("dataset_files"):
        ran = read_identity(run_dir).get("dataset")
        what = describe_difference(files, ran) if ran else f"see {run_dir / IDENTITY}"
        raise KitError(f"dataset {dataset} is not the data the run used (differs in {what}); pass the run's "
                       f"dataset with --dataset")


def check(run_dir: Path, dataset: Path | None = None, accuracy_target: str | None = None,
          targets_version: str | None = None, model_path: Path | None = None) -> dict:
    run_dir = Path(run_dir)
    merged = run_dir / MERGED
    info = verify(run_dir)  # the merged log and its partitions are what gather vouched for
    bench = registry.get(info["model"])
    if info["config"].get("probe"):
        raise KitError(f"run {run_dir} is a probe of {info['config']['probe']['n']} samples (evalkit explore): a probe "
                       f"is never checked against the targets as a PASS; run the full set for that")
    dataset = Path(dataset or info["dataset"])
    _same_dataset(run_dir, dataset, info["config"])
    model_path = Path(model_path or info["model_path"])
    target = accuracy_target or bench.default_accuracy_target
    if target not in bench.checker_names:
        raise KitError(f"--accuracy_target {target} is not defined for {bench.name} "
                       f"(choose {', '.join(bench.checker_names)})")
    checker_name = bench.checker_names[target]
    if targets_version:
        checker_name = f"{checker_name}@{targets_version}"
    mt = targets.get(checker_name)
    n_count = int(info["n_count"])
    synth = read_synthetic(dataset)
    if bool(synth) != bool(info["config"].get("synthetic")):
        raise KitError(f"dataset {dataset} is {'' if synth else 'not '}synthetic but the run was "
                       f"{'' if info['config'].get('synthetic') else 'not '}; pass the dataset the run used")
    try:
        t0 = time.time()
        metrics = score_log(bench, merged, dataset, n_count, model_path)
        score_s = time.time() - t0
        dataset_size = int(synth["n"]) if synth else bench.target_sizes.get(target, bench.dataset_size)
        scale = {m: n_count / dataset_size for m in mt.metrics()} if n_count < dataset_size else {}
        override = {k: float(v) for k, v in synth["reference"].items()} if synth else None
        low = low_precision(bench.name, info["config"].get("data_type", "fp32"), synth,
                            (info["config"].get("quantization") or {}).get("quantizer")) if synth else None
        verdict = targets.evaluate(mt, metrics, scale=scale, reference_override=override,
                                   ratio_override=low and {k: x["floor"] / 100 for k, x in low["metrics"].items()})
        lines = bench.accuracy_lines(metrics)
        text = "\n".join(lines) + f"\nhash={sha256_file(merged)}\n"
        # Self-check: every metric the checker needs must be readable by its own regex.
        for r in verdict.rows:
            pattern_key = "WER" if r["metric"] == "WER" else r["metric"]
            vals = targets.parse_accuracy_txt(text, pattern_key)
            if not vals and r["value"] < 0:
                # the checker's patterns read no minus sign: it would find no value and reject the run
                r["pass"], r["note"] = False, "negative: the checker's pattern cannot read it"
            elif not vals:
                raise KitError(f"internal: accuracy.txt line for {r['metric']} does not match the checker pattern")
        atomic_write_text(run_dir / "accuracy.txt", text)
        extras = bench.write_extras(run_dir, merged, dataset, model_path)  # e.g. SDXL's images/ for the checker
        result = {
            "model": bench.name, "checker_name": checker_name, "accuracy_target": target,
            "metrics": {k: v for k, v in metrics.items()}, "rows": verdict.rows,
            "verdict": "PASS" if verdict.passed else "FAIL", "synthetic": bool(synth),
            "n_count": n_count, "dataset_size": dataset_size, "partial": n_count < dataset_size,
            "config_hash": info["config_hash"], "config": info["config"], "score_seconds": round(score_s, 3),
            "targets_source": mt.source, "extras": extras, "merged_sha256": info["merged"]["sha256"],
            "synthetic_low_precision": low,
        }
        atomic_write_json(run_dir / "accuracy.json", result)
    except KitError as e:
        # the report reads this to show the run as ERROR, and why (one line)
        atomic_write_json(run_dir / CHECK_ERROR, {"error": str(e).splitlines()[0] if str(e) else type(e).__name__,
                                                   "time": time.time()})
        raise
    (run_dir / CHECK_ERROR).unlink(missing_ok=True)  # an earlier check's error no longer holds
    return result
