"""MLPerf accuracy targets, exactly as the submission checker defines them.

Values and rules come from the facts sheet §1 (checker MODEL_CONFIG tuples).
A lower bound is `reference * ratio`; an upper limit is `reference * ratio`
too (ratio > 1), so the table keeps the reference next to every bound.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import KitError


@dataclass(frozen=True)
class Bound:
    metric: str          # checker metric name: acc, mAP, F1, ROUGE1, GEN_LEN, ...
    reference: float     # the reference value the bound is derived from
    ratio: float         # bound = reference * ratio
    kind: str            # "min" (value >= bound) or "max" (value <= bound)
    scalable: bool = False  # sum-type metric: scaled by n_count / dataset_size

    @property
    def value(self) -> float:
        return round(self.reference * self.ratio, 10)  # strips float noise only


@dataclass(frozen=True)
class ModelTargets:
    checker_name: str
    bounds: tuple[Bound, ...]
    source: str
    note: str = ""

    def metrics(self) -> list[str]:
        seen: list[str] = []
        for b in self.bounds:
            if b.metric not in seen:
                seen.append(b.metric)
        return seen


def _lower(metric, ref, ratio, scalable=False):
    return Bound(metric, ref, ratio, "min", scalable)


def _upper(metric, ref, ratio):
    return Bound(metric, ref, ratio, "max")


def _rouge(r1, r2, rl, ratio):
    return (_lower("ROUGE1", r1, ratio), _lower("ROUGE2", r2, ratio), _lower("ROUGEL", rl, ratio))


def _table() -> dict[str, ModelTargets]:
    t: list[ModelTargets] = [
        ModelTargets("resnet", (_lower("acc", 76.46, 0.99),), "checker v4.1-v6.1"),
        ModelTargets("retinanet", (_lower("mAP", 37.55, 0.99),), "checker v4.1-v6.0"),
        ModelTargets("bert-99", (_lower("F1", 90.874, 0.99),), "checker v4.1-v6.1"),
        ModelTargets("bert-99.9", (_lower("F1", 90.874, 0.999),), "checker v4.1-v6.1"),
        ModelTargets("dlrm-v2-99", (_lower("AUC", 80.31, 0.99),), "checker v4.1-v6.0"),
        ModelTargets("dlrm-v2-99.9", (_lower("AUC", 80.31, 0.999),), "checker v4.1-v6.0"),
        ModelTargets("3d-unet-99", (_lower("DICE", 0.86170, 0.99),), "checker v4.1-v6.1", "DICE on a 0-1 scale"),
        ModelTargets("3d-unet-99.9", (_lower("DICE", 0.86170, 0.999),), "checker v4.1-v6.1", "DICE on a 0-1 scale"),
    ]
    for suffix, ratio in (("99", 0.99), ("99.9", 0.999)):
        t.append(ModelTargets(
            f"gptj-{suffix}",
            _rouge(42.9865, 20.1235, 29.9881, ratio) + (_lower("GEN_LEN", 4016878, 0.9, scalable=True),),
            "checker v4.1, v5.0", "GEN_LEN = total characters of the decoded predictions; no upper limit"))
        t.append(ModelTargets(
            f"llama2-70b-{suffix}",
            _rouge(44.4312, 22.0352, 28.6162, ratio)
            + (_lower("TOKENS_PER_SAMPLE", 294.45, 0.9), _upper("TOKENS_PER_SAMPLE", 294.45, 1.1)),
            "checker v4.1-v6.0 (-99.9 also v6.1)"))
    mixtral_upper = _upper("TOKENS_PER_SAMPLE", 145.9, 1.1)  # checker never moved the upper ref to 144.84
    t.append(ModelTargets(
        "mixtral-8x7b",
        _rouge(45.5989, 23.3526, 30.4608, 0.99)
        + (_lower("TOKENS_PER_SAMPLE", 144.84, 0.9), mixtral_upper,
           _lower("gsm8k_accuracy", 73.66, 0.99), _lower("mbxp_accuracy", 60.16, 0.99)),
        "checker v5.0, v5.1, v6.0", "lower and upper TOKENS_PER_SAMPLE use different references"))
    t.append(ModelTargets(
        "mixtral-8x7b@v4.1",
        _rouge(45.4911, 23.2829, 30.3615, 0.99)
        + (_lower("TOKENS_PER_SAMPLE", 145.9, 0.9), mixtral_upper,
           _lower("gsm8k_accuracy", 73.78, 0.99), _lower("mbxp_accuracy", 60.12, 0.99)),
        "checker v4.1 (submission_checker.py line 271)"))
    t.append(ModelTargets(
        "stable-diffusion-xl",
        (_lower("CLIP_SCORE", 31.68631873, 1.0), _lower("FID_SCORE", 23.01085758, 1.0),
         _upper("CLIP_SCORE", 31.81331801, 1.0), _upper("FID_SCORE", 23.95007626, 1.0)),
        "checker v4.0-v6.1", "two-sided: CLIP in [31.686, 31.813], FID in [23.011, 23.950]"))
    t.append(ModelTargets("rnnt", (_lower("WER", 100 - 7.452, 0.99),), "checker v4.0",
                          "the checker's metric 'WER' is 100 - WER% (the 'accuracy=' figure); WER 7.452 %"))
    # v6.1 checker (tools/submission/submission_checker/constants.py, MODEL_CONFIG["v6.1"]): ROUGELSUM is
    # bounded too, and GEN_LEN has a window: accuracy-target 0.9 x, accuracy-upper-limit 1.1 x
    for name, (r1, r2, rl, rlsum, gen_len) in {
            "llama3.1-8b": (38.7792, 15.9075, 24.4957, 35.793, 8167644),
            "llama3.1-8b-edge": (39.06, 16.1147, 24.6375, 36.124, 3051113)}.items():
        t.append(ModelTargets(
            name, _rouge(r1, r2, rl, 0.99) + (_lower("ROUGELSUM", rlsum, 0.99),
                                              _lower("GEN_LEN", gen_len, 0.9, scalable=True),
                                              Bound("GEN_LEN", gen_len, 1.1, "max", True)),
            "checker v6.1", "GEN_LEN = total characters of the post-processed predictions, within 0.9-1.1 x"))
    t.append(ModelTargets("whisper", (_lower("ACCURACY", 100.0 - 2.0671, 0.99),), "checker v6.1",
                          "ACCURACY = 100 - WER% (accuracy_eval.py's 'accuracy=' figure); reference 97.9329"))
    # v6.1 reasoning models (submission checker constants.py, key "v6.1")
    t.append(ModelTargets(
        "deepseek-r1",
        (_lower("exact_match", 81.3582, 0.99), _lower("TOKENS_PER_SAMPLE", 3886.2274, 0.9),
         _upper("TOKENS_PER_SAMPLE", 3886.2274, 1.1)),
        "checker v6.1 (constants.py)", "exact_match over AIME/MATH500/GPQA/MMLU-Pro/LiveCodeBench; 4,388 samples"))
    t.append(ModelTargets(
        "gpt-oss-120b", (_lower("exact_match", 83.13, 0.99), _upper("TOKENS_PER_SAMPLE", 9999, 1.1)),
        "checker v6.1 (constants.py)", "accuracy set 4,395 (performance set 6,396); no lower TOKENS_PER_SAMPLE"))
    return {m.checker_name: m for m in t}


TARGETS: dict[str, ModelTargets] = _table()

# The checker's ACC_PATTERN (HEAD constants.py): what accuracy.txt lines must match.
ACC_PATTERN: dict[str, str] = {
    "acc": r"^(?:\{\"accuracy|accuracy)[\": ]*=?\s*([\d\.]+).*",
    "AUC": r"^AUC=([\d\.]+).*",
    "mAP": r".*(?:mAP=|'Total':)\s*([\d.]+)",
    "F1": r"^{[\"']exact_match[\"']\:\s*[\d\.]+,\s*[\"']f1[\"']\:\s*([\d\.]+)}",
    "WER": r"Word Error Rate\:.*, accuracy=([0-9\.]+)%",
    "ACCURACY": r"Word Error Rate\:.*, accuracy=([0-9\.]+)%",  # v6.1's name for the same pattern (whisper)
    "DICE": r"Accuracy\:\s*mean\s*=\s*([\d\.]+).*",
    "ROUGE1": r".*'rouge1':\s+'?([\d.]+)'?.*",
    "ROUGE2": r".*'rouge2':\s+'?([\d.]+)'?.*",
    "ROUGEL": r".*'rougeL':\s+'?([\d.]+)'?.*",
    "ROUGELSUM": r".*'rougeLsum':\s+'?([\d.]+)'?.*",
    "GEN_LEN": r".*'gen_len':\s([\d.]+).*",
    "TOKENS_PER_SAMPLE": r".*'tokens_per_sample':\s([\d.]+).*",
    "CLIP_SCORE": r".*'CLIP_SCORE':\s+'?([\d.]+).*",
    "FID_SCORE": r".*'FID_SCORE':\s+'?([\d.]+).*",
    "gsm8k_accuracy": r".*'gsm8k':\s([\d.]+).*",
    "mbxp_accuracy": r".*'mbxp':\s([\d.]+).*",
    "exact_match": r".*'exact_match':\s([\d.]+).*",
}


# What a person reads for a checker metric whose name says otherwise: RNN-T's checker metric "WER" (v4.0)
# is the 'accuracy=' figure, 100 - WER%, not the word error rate. Files the checker reads keep its names.
METRIC_LABELS = {"WER": "ACCURACY (100-WER%)"}


def label(metric: str) -> str:
    """The metric's name in tables and reports (METRIC_LABELS; else the checker's own)."""
    return METRIC_LABELS.get(metric, metric)


# Synthetic sets outside fp32. A synthetic reference is the fp32 output of a random-weight model, whose
# outputs sit close together: fp16/bf16 rounding changes many of them (an argmax, a voxel's class) in a
# pipeline with no bug. Measured by bench/bench_synthetic_dtypes.py (the model's default synthetic set:
# seed 0, synthetic_n samples, CPU, torch 2.13): % of the fp32 synthetic reference that a correct run reached,
# per (model, DATA_TYPE, metric). check judges such a run against SYNTHETIC_FLOOR of that figure (the
# reach varies with the set and the device's rounding) and never below the set's own index-shift score.
SYNTHETIC_LOW_PRECISION: dict[tuple[str, str], dict[str, float]] = {
    # ResNet50, n=24 (top-1 agreement with the fp32 argmax): 100 % since its synthetic set keeps only clear
    # calls (issue 26: top-1 margin >= 0.3 logit std, residual gain 0.3, fc on the features' principal
    # components; before: bf16 33 %, fp16 79 %). Index shift at n=24: 8.33 %.
    ("resnet", "bf16"): {"acc": 100.0}, ("resnet", "fp16"): {"acc": 100.0},
    # 3D-UNet, n=4 (its default): mean DICE vs the fp32 label volumes; index shift 27.68 %
    ("3d-unet", "bf16"): {"DICE": 49.30}, ("3d-unet", "fp16"): {"DICE": 49.92},
    # RetinaNet, n=12 (its default): mAP vs the fp32 detections; index shift 0 %
    ("retinanet", "bf16"): {"mAP": 9.04}, ("retinanet", "fp16"): {"mAP": 68.48},
}
SYNTHETIC_FLOOR = 0.5


# Synthetic sets, quantized (evalkit/quantize.py): % of the fp32 synthetic reference that a correct quantized
# run reached, per (model, quantizer, metric), measured by bench/bench_quant.py (seed 0, the model's
# synthetic_n, CPU, torch 2.13, torchao 0.18.0). Only pairs whose synthetic answers int8 cannot keep are
# listed; the others (BERT and ResNet50 int8-static) are judged against the fp32 reference itself. check
# judges a listed pair as a low-precision data type (SYNTHETIC_FLOOR of the figure, never below the set's
# index-shift score + 1) and its table says so at once.
SYNTHETIC_QUANTIZED: dict[tuple[str, str], dict[str, float]] = {
    # GPT-J W8A8 (N_CALIB 8, n=12, one prompt per batch): the tiny random GPT-J's beam search has near-ties at almost every step and
    # its text diverges after a few tokens under any int8 noise (int8 weights alone: ROUGE1 72 %). Index shift:
    # ROUGE1 40.32 %, ROUGE2 26.77 %, ROUGEL 37.13 %. GEN_LEN (98.22 %) keeps MLPerf's 90 % bound: an index
    # shift leaves a set's total length unchanged, so no floor above it could hold.
    ("gpt-j", "w8a8-smoothquant"): {"ROUGE1": 72.72, "ROUGE2": 60.12, "ROUGEL": 67.47},
}


def synthetic_quantized_expectation(model: str, quantizer: str) -> dict[str, float] | None:
    """metric -> measured % of the fp32 synthetic reference for a correct quantized run (None: not listed,
    the fp32 reference applies)."""
    return SYNTHETIC_QUANTIZED.get((model, quantizer))


def synthetic_expectation(model: str, data_type: str) -> dict[str, float] | None:
    """metric -> measured % of the fp32 synthetic reference for a correct run in data_type (None: fp32,
    where the synthetic reference is exact, or a pair not measured)."""
    return None if data_type == "fp32" else SYNTHETIC_LOW_PRECISION.get((model, data_type))


def get(checker_name: str) -> ModelTargets:
    try:
        return TARGETS[checker_name]
    except KeyError:
        raise KitError(f"no accuracy targets for '{checker_name}'; known: {', '.join(TARGETS)}") from None


def parse_accuracy_txt(text: str, metric: str) -> list[float]:
    """Every value the checker's regex for `metric` finds, line by line (re.match)."""
    pat = re.compile(ACC_PATTERN[metric])
    out = []
    for line in text.splitlines():
        m = pat.match(line)
        if m:
            out.append(float(m.group(1)))
    return out


@dataclass
class Verdict:
    rows: list[dict] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.rows) and all(r["pass"] for r in self.rows)


def evaluate(targets: ModelTargets, metrics: dict, scale: dict | None = None,
             reference_override: dict | None = None, ratio_override: dict | None = None) -> Verdict:
    """Compare metrics with every bound. `scale` scales sum-type bounds (partial runs);
    `reference_override` replaces references (synthetic runs keep the ratios); `ratio_override`
    replaces the ratio of a metric's lower bound (a synthetic low-precision run's floor)."""
    scale = scale or {}
    v = Verdict()
    windows: dict[str, list[float]] = {}
    for b in targets.bounds:
        windows.setdefault(b.metric, []).append(b.value)
    for b in targets.bounds:
        ref, ratio = b.reference, b.ratio
        if reference_override is not None:
            if b.metric not in reference_override:
                continue
            ref = reference_override[b.metric]
            if len(windows[b.metric]) == 2:
                # a two-sided window (SDXL's absolute bounds, TOKENS_PER_SAMPLE) keeps its relative
                # width around the synthetic reference: bound / the real window's midpoint
                ratio = b.value / (sum(windows[b.metric]) / 2)
        if ratio_override and b.metric in ratio_override and b.kind == "min":
            ratio = ratio_override[b.metric]
        factor = scale.get(b.metric, 1.0) if b.scalable else 1.0
        ref = ref * factor  # a partial run's sum-type reference (GEN_LEN) scales with its bound
        # the real bounds are the checker's numbers (noise of the product stripped); synthetic ones exact
        bound = round(ref * ratio, 10) if reference_override is None else ref * ratio
        if b.metric not in metrics:
            raise KitError(f"accuracy result has no '{b.metric}' metric, which {targets.checker_name} requires")
        value = float(metrics[b.metric])
        ok = value >= bound if b.kind == "min" else value <= bound
        v.rows.append({"metric": b.metric, "value": value, "reference": ref,
                       "pct_of_reference": (100.0 * value / ref) if ref else None,
                       "kind": b.kind, "target": bound, "ratio": ratio, "pass": ok,
                       "scaled": factor != 1.0})
    return v


def format_table() -> str:
    lines = [f"{'checker model':<22} {'metric':<20} {'rule':<5} {'reference':>12} {'x':>6} {'bound':>14}  source"]
    for name, mt in TARGETS.items():
        for b in mt.bounds:
            rule = ">=" if b.kind == "min" else "<="
            lines.append(f"{name:<22} {label(b.metric):<20} {rule:<5} {b.reference:>12g} {b.ratio:>6g} {b.value:>14.6f}  {mt.source}")
        if mt.note:
            lines.append(f"{'':<22} note: {mt.note}")
    return "\n".join(lines)
