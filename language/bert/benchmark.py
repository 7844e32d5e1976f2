"""BERT-Large on SQuAD v1.1 (MLPerf `bert`, checker bert-99 / bert-99.9).

qsl_idx indexes features (10,833 for the dev set) built as the reference does
(language/bert/squad.py); model = HF BertForQuestionAnswering from a checkpoint dir
with its vocab.txt; payload = float32 (384, 2) [start, end] logits per token, as the
reference PyTorch SUT writes them; accuracy = accuracy-squad.py + evaluate_v1.1.py.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from evalkit.benchmark import Benchmark, Dataset
from evalkit.errors import KitError
from language import hf_checkpoint_dir

from . import squad

DATASET_FILE = "dev-v1.1.json"


def load_tokenizer(model_path: Path):
    from transformers import BertTokenizerFast

    from evalkit.hf_files import check_dir

    vocab = Path(model_path) / "vocab.txt"
    if not vocab.is_file():
        raise KitError(f"{vocab} not found; the BERT checkpoint dir must hold its vocab.txt.")
    check_dir(Path(model_path), "the BERT checkpoint")  # every file sound (weights headers too) before any is read
    check_vocab(Path(model_path))
    # The reference tokenizer: uncased wordpieces of the checkpoint's vocab (do_lower_case=True).
    return BertTokenizerFast.from_pretrained(str(model_path), do_lower_case=True)


def check_vocab(model_path: Path) -> None:
    """vocab.txt holds one wordpiece a line, exactly config.json's vocab_size of them (a truncated or
    foreign vocabulary would tokenise the questions differently without any error)."""
    import json

    vocab, cfg = Path(model_path) / "vocab.txt", Path(model_path) / "config.json"
    try:
        size = json.loads(cfg.read_text(encoding="utf-8"))["vocab_size"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # the config's own problems are the model loader's to name
    lines = vocab.read_text(encoding="utf-8").split("\n")
    n = len(lines) - (lines[-1] == "")
    if n != size:
        raise KitError(f"{vocab} holds {n} wordpieces, {cfg} says vocab_size {size}: the vocabulary is truncated "
                       f"or not this checkpoint's; restore the published vocab.txt.")
    if "[UNK]" not in lines:
        raise KitError(f"{vocab} has no [UNK] wordpiece; it is not a BERT vocabulary.")


_cache: dict = {}


def squad_features(dataset_path: Path, model_path: Path):
    """(examples, features) for dev-v1.1.json + the checkpoint's vocab, memoised per process."""
    f = Path(dataset_path) / DATASET_FILE
    key = (str(f.resolve()), str((Path(model_path) / "vocab.txt").resolve()))
    if key not in _cache:
        examples = squad.read_examples(f)
        _cache[key] = (examples, squad.build_features(examples, load_tokenizer(model_path)))
    return _cache[key]


class SquadFeatures(Dataset):
    def __init__(self, root: Path, model_path: Path | None = None):
        self.root = Path(root)
        self.examples, self.features = squad_features(self.root, BENCHMARK.accuracy_model_path(self.root, model_path))
        self.size = len(self.features)

    def load(self, index: int):
        if not 0 <= index < self.size:
            raise KitError(f"feature index {index} is outside {self.root / DATASET_FILE} ({self.size} features).")
        f = self.features[index]
        return f.input_ids, f.input_mask, f.segment_ids

    def check_available(self, start: int, stop: int) -> None:
        pass  # every file was read when the dataset opened; the core checks the range

    def groups(self):
        return [f.example_index for f in self.features]  # a question is scored from all its features


class Bert(Benchmark):
    name = "bert"
    mlperf_name = "bert"
    checker_names = {"99": "bert-99", "99.9": "bert-99.9"}
    default_accuracy_target = "99"
    dataset_size = 10833
    performance_sample_count = 10833
    payload_dtype = "float32"
    payload_size = 384 * 2        # (384, 2) start/end logits
    default_batch_size = 8
    cuda_batch_size = 128         # one H100/H200: batch 8 halves the GPU's rate (issue 12's figures)
    synthetic_n = 24
    default_quantizer = "int8-static"   # CALIBRATE=true: torchao PT2E static int8 (docs/quantization.md)

    def open_dataset(self, path: Path, model_path: Path | None = None, options: dict | None = None) -> SquadFeatures:
        f = Path(path) / DATASET_FILE
        if not f.is_file():
            raise KitError(f"{f} not found; the BERT dataset dir must hold the SQuAD v1.1 {DATASET_FILE}.")
        squad.read_examples(f)  # validate the file first: its errors name it, not the vocab lookup
        return SquadFeatures(Path(path), model_path)

    def fingerprint(self, dataset_path: Path, model_path: Path) -> dict:
        f, mp = Path(dataset_path) / DATASET_FILE, Path(model_path)
        if not f.is_file():
            raise KitError(f"{f} not found; the BERT dataset dir must hold {DATASET_FILE}.")
        hf_checkpoint_dir(mp, "BERT")
        return {}  # dev-v1.1.json and the checkpoint (vocab.txt): by content, in the core

    def load_model(self, model_path: Path, device: str, data_type: str, options: dict) -> Any:
        from transformers import BertForQuestionAnswering

        from evalkit.hf_files import check_dir

        mp = hf_checkpoint_dir(model_path, "BertForQuestionAnswering (config.json, weights, vocab.txt)")
        check_dir(mp, "the BERT checkpoint")
        try:
            model = BertForQuestionAnswering.from_pretrained(str(mp), dtype=self.torch_dtype(data_type))
        except (OSError, ValueError, RuntimeError) as e:
            raise KitError(f"cannot load BERT from {mp} ({type(e).__name__}: "
                           f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}).") from None
        return model.eval().to(device)

    def make_batch(self, samples: Sequence[Any], device: str, data_type: str, options: dict) -> Any:
        import torch

        ids, mask, seg = (torch.from_numpy(np.stack([s[k] for s in samples])).to(device) for k in range(3))
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": seg}

    def store_sample(self, sample: Any) -> Any:
        import torch
        return torch.from_numpy(np.stack([np.asarray(x, dtype=np.int64) for x in sample]))  # (3, 384)

    def batch_from_store(self, x: Any, device: str, data_type: str, options: dict) -> Any:
        return {"input_ids": x[:, 0], "attention_mask": x[:, 1], "token_type_ids": x[:, 2]}

    def forward(self, model: Any, inputs: Any) -> Any:
        import torch

        with torch.inference_mode():
            out = model(**inputs)
        # the reference SUT: stack([start, end], -1) -> (batch, 384, 2), float32
        return torch.stack([out.start_logits, out.end_logits], dim=-1).float()

    def postprocess(self, outputs: Any, n: int) -> list[np.ndarray]:
        arr = outputs[:n].cpu().numpy().astype(np.float32)
        return [np.ascontiguousarray(a) for a in arr]

    # --- accuracy -------------------------------------------------------------
    def predictions(self, pairs: Iterable[tuple[int, np.ndarray]], dataset_path: Path, n_count: int,
                    model_path: Path | None = None, subset: Sequence[int] | None = None):
        """(examples in range, {qas_id: n-best list}) from clean (qsl_idx, payload) pairs.
        subset: the features scored (an explore probe); default: all of 0..n_count-1."""
        examples, feats = squad_features(Path(dataset_path), self.accuracy_model_path(Path(dataset_path), model_path))
        n = min(n_count, len(feats))
        logits: dict[int, np.ndarray] = {}
        for qsl_idx, payload in pairs:
            if qsl_idx >= n:
                raise KitError(f"qsl_idx {qsl_idx} is outside the {n} features of {dataset_path}.")
            # accuracy-squad.py keeps the last occurrence; gather proves repeats identical, so first == last
            logits[qsl_idx] = payload.reshape(-1, 2)
        by_example: dict[int, list] = {}
        for i in sorted(logits):  # feature order, as the reference walks an example's features
            by_example.setdefault(feats[i].example_index, []).append((feats[i], logits[i]))
        # A partial run scores the questions whose first feature is in range (the rest are not asked).
        in_range = sorted({feats[i].example_index for i in (range(n) if subset is None else subset)})
        preds = {examples[e].qas_id: squad.nbest(examples[e], by_example[e])
                 for e in in_range if e in by_example}
        return [examples[e] for e in in_range], preds

    def score(self, pairs: Iterable[tuple[int, np.ndarray]], dataset_path: Path, n_count: int,
              model_path: Path | None = None) -> dict:
        examples, nb = self.predictions(pairs, dataset_path, n_count, model_path)
        r = squad.squad_v11(examples, {k: v[0][0] for k, v in nb.items()})
        return {"F1": r["f1"], "exact_match": r["exact_match"], "questions": len(examples)}

    def score_subset(self, pairs, dataset_path: Path, indices, n_count: int, model_path: Path | None = None) -> dict:
        examples, nb = self.predictions(pairs, dataset_path, n_count, model_path, subset=indices)
        r = squad.squad_v11(examples, {k: v[0][0] for k, v in nb.items()})
        return {"F1": r["f1"], "exact_match": r["exact_match"], "questions": len(examples)}

    def accuracy_lines(self, metrics: dict) -> list[str]:
        return ['{"exact_match": %s, "f1": %s}' % (float(metrics["exact_match"]), float(metrics["F1"]))]

    # --- synthetic ------------------------------------------------------------
    def synthesize(self, out: Path, n: int, seed: int) -> list[np.ndarray]:
        from .synthetic import write_synthetic

        return write_synthetic(self, Path(out), n, seed)

    def synthetic_reference(self) -> dict[str, float]:
        return {"F1": 100.0, "exact_match": 100.0}


BENCHMARK = Bert()
