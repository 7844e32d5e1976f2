"""Scorers at full-set scale: the kit's vs the path the MLCommons reference script runs.

Each row runs in its own child process (same seeded synthetic input on both sides), so its
peak memory is its own: "extra MB" = peak RSS while scoring minus RSS once the input is built.

* ROUGE (Llama-2, 24,576 pairs): the reference is language/llama2-70b/evaluate-accuracy.py's
  path: Pool(cpu_count()) over cpu_count() chunks, each chunk one rouge_score RougeScorer
  (use_stemmer=True) looping score(target, prediction), as evaluate's "rouge" metric does with
  use_aggregator=False; round(mean * 100, 4). The kit: language.rouge.rouge. Texts: ~225-word
  answers and targets of a few sentences, pseudo-words drawn Zipf-like (news text reuses words),
  already post-processed (one sentence per line) on both sides.
* AUC (DLRM-v2, 89,137,319 pairs): the reference is accuracy-dlrm.py's
  sklearn.metrics.roc_auc_score(targets, results) on float32 arrays; the kit:
  recommendation.dlrm_v2.auc.roc_auc. Scores: sigmoid outputs rounded to float32 (ties).
* WER (RNN-T, 2,513 utterances of ~20 words, ~8 % word errors): the reference is
  pytorch/metrics.py word_error_rate, read from a local clone of mlcommons/inference when
  --reference_repo points at one (a git dir or work tree), else a transcription of it
  (marked); the kit: speech_recognition.rnnt.text.word_errors_total (jiwer).

Every row asserts the kit prints the reference's number to its last printed digit.
RetinaNet's COCO mAP is benched by bench/bench_retinanet.py.

    nice .venv/bin/python bench/bench_scorers.py [--only rouge,auc,wer] [--scale 1.0]
        [--reference_repo /path/to/inference]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZES = {"rouge": 24576, "auc": 89137319, "wer": 2513}


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> float:
    """Reset the peak RSS (VmHWM, Linux >= 4.0) so the input's own build does not count; RSS now."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return _status_mb("VmRSS")


def _peak_mb() -> float:
    return _status_mb("VmHWM")


# --- inputs -------------------------------------------------------------------------------------
def rouge_texts(n: int, seed: int = 0, pred_words=(150, 300), ref_words=(150, 300),
                sentence=(8, 26)) -> tuple[list[str], list[str]]:
    """n (prediction, reference) pairs of Zipf-distributed words from a synthetic lexicon, in sentences
    of sentence[0]..sentence[1]-1 words, as rouge.postprocess leaves them (one sentence a line)."""
    from language import rouge
    from language.synthtext import lexicon

    rng = np.random.default_rng(seed)
    words = lexicon(rng, 20000)
    p = 1.0 / np.arange(1, len(words) + 1)
    p /= p.sum()

    def text(n_words: int) -> str:
        ws = [words[i] for i in rng.choice(len(words), n_words, p=p)]
        out, i = [], 0
        while i < len(ws):
            k = int(rng.integers(*sentence))
            s = " ".join(ws[i:i + k])
            out.append(s[0].upper() + s[1:] + ".")
            i += k
        return " ".join(out)

    preds = [text(int(rng.integers(*pred_words))) for _ in range(n)]
    refs = [text(int(rng.integers(*ref_words))) for _ in range(n)]
    return rouge.postprocess(preds), rouge.postprocess(refs)


def auc_inputs(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(n, dtype=np.float32)
    y = (rng.random(n, dtype=np.float32) < 1 / (1 + np.exp(-(1.2 * z - 1.0)))).astype(np.float32)
    s = (1 / (1 + np.exp(-(z + 0.5 * rng.standard_normal(n, dtype=np.float32))))).astype(np.float32)
    return y, s


def wer_texts(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    from language.synthtext import lexicon

    rng = np.random.default_rng(seed)
    words = lexicon(rng, 5000)
    refs, hyps = [], []
    for _ in range(n):
        r = [words[i] for i in rng.integers(0, len(words), int(rng.integers(5, 36)))]
        h = []
        for w in r:
            u = rng.random()
            if u < 0.04:
                h.append(words[int(rng.integers(0, len(words)))])   # substitution
            elif u < 0.06:
                pass                                                # deletion
            elif u < 0.08:
                h += [w, words[int(rng.integers(0, len(words)))]]   # insertion
            else:
                h.append(w)
        refs.append(" ".join(r))
        hyps.append(" ".join(h))
    return hyps, refs


# --- the two sides ------------------------------------------------------------------------------
def _ref_rouge_chunk(chunk):
    from rouge_score import rouge_scorer

    preds, targets = chunk
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    out = {t: [] for t in ("rouge1", "rouge2", "rougeL", "rougeLsum")}
    for p, t in zip(preds, targets):
        s = scorer.score(t, p)
        for k in out:
            out[k].append(s[k].fmeasure)
    return out


def reference_rouge(preds, targets):
    from multiprocessing import Pool, cpu_count

    num_chunks = cpu_count()
    size = len(preds) // num_chunks + (len(preds) % num_chunks > 0)
    chunks = [(preds[i:i + size], targets[i:i + size]) for i in range(0, len(preds), size)]
    with Pool(num_chunks) as pool:
        results = pool.map(_ref_rouge_chunk, chunks)
    agg: dict[str, list] = {}
    for r in results:
        for k, v in r.items():
            agg.setdefault(k, []).extend(v)
    return {k: round(np.mean(v) * 100, 4) for k, v in agg.items()}


def _reference_wer_fn(repo: str | None):
    """word_error_rate from the reference's own metrics.py when a clone is at hand."""
    path = "retired_benchmarks/speech_recognition/rnnt/pytorch/metrics.py"
    src = None
    if repo:
        p = Path(repo)
        if (p / path).is_file():
            src = (p / path).read_text()
        else:
            cp = subprocess.run(["git", f"--git-dir={p}", "show", f"HEAD:{path}"], capture_output=True, text=True)
            src = cp.stdout if cp.returncode == 0 else None
    if src is None:
        def word_error_rate(hypotheses, references):  # transcription of the reference's routine
            scores = words = 0
            for h, r in zip(hypotheses, references):
                a, b = h.split(), r.split()
                prev = list(range(len(b) + 1))
                for i, wa in enumerate(a, 1):
                    cur = [i] + [0] * len(b)
                    for j, wb in enumerate(b, 1):
                        cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (wa != wb))
                    prev = cur
                scores += prev[-1]
                words += len(b)
            return scores / words, scores, words
        return word_error_rate, "transcribed routine (no --reference_repo)"
    ns: dict = {}
    exec(compile(src, path, "exec"), ns)  # noqa: S102 -- the reference's file, for timing only
    return ns["word_error_rate"], "reference metrics.py"


def one(kind: str, side: str, n: int, repo: str | None) -> dict:
    """Build the input, score it one way; time, CPU, memory."""
    label = side
    if kind == "rouge":
        from language import rouge

        preds, refs = rouge_texts(n)
        base = _reset_peak()
        t0, c0 = time.perf_counter(), time.process_time()
        if side == "reference":
            got = reference_rouge(preds, refs)
        else:
            got = rouge.rouge(preds, refs)
        shown = " ".join(f"{k}={got[k]}" for k in ("rouge1", "rouge2", "rougeL", "rougeLsum"))
    elif kind == "auc":
        y, s = auc_inputs(n)
        base = _reset_peak()
        t0, c0 = time.perf_counter(), time.process_time()
        if side == "reference":
            from sklearn.metrics import roc_auc_score

            v = roc_auc_score(y, s)
        else:
            from recommendation.dlrm_v2.auc import roc_auc

            v = roc_auc(y, s)
        shown = "AUC={:.3f}%".format(100.0 * v)  # accuracy-dlrm.py's format
    elif kind == "wer":
        from speech_recognition.rnnt import text

        import jiwer  # noqa: F401 -- imported before the clock starts, as the reference's module is

        hyps, refs = wer_texts(n)
        fn, label = _reference_wer_fn(repo) if side == "reference" else (None, side)
        base = _reset_peak()
        t0, c0 = time.perf_counter(), time.process_time()
        if side == "reference":
            wer, scores, words = fn(hyps, refs)
        else:
            scores, words = text.word_errors_total(hyps, refs)
            wer = scores / words
        shown = f"Word Error Rate: {wer * 100}% ({scores}/{words})"
    else:
        raise SystemExit(f"unknown scorer {kind}")
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu += kids.ru_utime + kids.ru_stime  # pool workers (their memory is not in 'extra MB')
    return {"kind": kind, "side": side, "label": label, "n": n, "wall": wall, "cpu": cpu,
            "extra_mb": max(0.0, _peak_mb() - base), "shown": shown}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="rouge,auc,wer")
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the real sizes (quick looks)")
    ap.add_argument("--reference_repo", default=os.environ.get("MLCOMMONS_INFERENCE"),
                    help="a clone of mlcommons/inference (work tree or git dir) for the WER routine")
    ap.add_argument("--_one", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--_n", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._one:
        print(json.dumps(one(a._one[0], a._one[1], a._n, a.reference_repo)))
        return
    rows = []
    for kind in a.only.split(","):
        n = max(2, int(SIZES[kind] * a.scale))
        res = {}
        for side in ("reference", "kit"):
            cmd = [sys.executable, __file__, "--_one", kind, side, "--_n", str(n)]
            if a.reference_repo:
                cmd += ["--reference_repo", a.reference_repo]
            cp = subprocess.run(cmd, capture_output=True, text=True)
            if cp.returncode:
                raise SystemExit(f"{kind} {side} failed:\n{cp.stderr}")
            res[side] = json.loads(cp.stdout.strip().splitlines()[-1])
        same = res["reference"]["shown"] == res["kit"]["shown"]
        rows.append((kind, n, res, same))
        assert same, (kind, res["reference"]["shown"], res["kit"]["shown"])
    cores = len(os.sched_getaffinity(0))
    print(f"scorers at scale {a.scale} of the real sizes, {cores} cores, load avg {os.getloadavg()[0]:.1f}")
    print(f"{'scorer':<7}{'n':>11}  {'path':<44}{'wall s':>9}{'CPU s':>9}{'extra MB':>10}{'ratio':>8}")
    for kind, n, res, same in rows:
        r, k = res["reference"], res["kit"]
        print(f"{kind:<7}{n:>11}  {r['label']:<44}{r['wall']:>9.2f}{r['cpu']:>9.2f}{r['extra_mb']:>10.0f}")
        print(f"{'':<7}{'':>11}  {'kit':<44}{k['wall']:>9.2f}{k['cpu']:>9.2f}{k['extra_mb']:>10.0f}"
              f"{r['wall'] / k['wall']:>7.1f}x")
        print(f"{'':<20}same printed number: {same}: {k['shown']}")


if __name__ == "__main__":
    main()
