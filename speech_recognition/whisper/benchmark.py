"""Whisper large-v3 on LibriSpeech dev-clean + dev-other (MLPerf `whisper`, checker whisper).

Follows the reference `speech2text`: the repackaged set (utils/repackage_librispeech.py: the
utterances of one speaker-chapter joined with 0.5 s of silence into clips of at most 30 s; 1,633
clips) described by `dev-all-repack.json` (a JSON list of {transcript, files: [{fname, speed, ...}],
original_duration}); clips over MAX_DURATION (30 s) are dropped as manifest.py drops them. The
published manifest names its WAVs by the reference container's absolute path
(/data/dev-all-repack/<clip>.wav); the kit reads such a name as <dataset>/dev-all-repack/<clip>.wav
(its last two parts) and a relative name under the dataset dir, never anything outside it.

Audio as QSL.py loads it (librosa.load(sr=16000): mono float32; the published WAVs are 16 kHz
16-bit PCM, read here with soundfile, the same samples), log-mel features from the checkpoint's
preprocessor_config.json (WhisperFeatureExtractor: the 30 s window, 128 mel bins for large-v3:
what vLLM's Whisper processor computes), WhisperForConditionalGeneration from the HF checkpoint dir,
the decoder prompt <|startoftranscript|><|en|><|transcribe|><|notimestamps|>, greedy decoding
(temperature 0) of at most 200 new tokens, stopping at the tokenizer's EOS and the
generation_config's eos_token_id, with no logits processors (vLLM applies none of HF generate's
Whisper-specific suppressions). The payload is what reference_SUT.py sends: the decoded text
(special tokens skipped), lower-cased and stripped, as int64 indices of its characters that are
labels (speech_recognition/whisper/text.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from evalkit.benchmark import Benchmark, Dataset
from evalkit.errors import KitError

from speech_recognition import librispeech

from . import text

MANIFEST = "dev-all-repack.json"
MAX_DURATION = 30.0       # accuracy_eval.py / QSL.py: MAX_DURATION's default
SAMPLE_RATE = 16000
PROMPT = ("<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>")
# reference_SUT.py SamplingParams: temperature 0, max_tokens 200; other values are for experiments only
GEN_DEFAULTS = {"max_new_tokens": 200}


def _wav_path(root: Path, manifest: Path, i: int, fname) -> Path:
    if not isinstance(fname, str) or not fname or ".." in fname.split("/"):
        raise KitError(f"{manifest} entry {i}: file {fname!r} is not a path inside the dataset dir; "
                       f"refusing to read outside {root}.")
    p = Path(fname)
    if p.is_absolute():  # the reference container's /data/dev-all-repack/<clip>.wav
        if len(p.parts) < 3:
            raise KitError(f"{manifest} entry {i}: file {fname!r} is not <dir>/<clip>.wav under the dataset dir.")
        return root / p.parent.name / p.name
    return root / p


def read_manifest(root: Path) -> list[dict]:
    """Kept clips (original_duration <= 30 s, the speed-1 file), in manifest order:
    {"wav": path, "reference": the transcript's label characters}."""
    root = Path(root)
    f, kept = librispeech.kept_entries(root, MANIFEST, MAX_DURATION,
                                       "dev-all-repack/ WAVs (the reference's repackaged dev-clean + dev-other)")
    if not kept:
        raise KitError(f"{f} keeps no clip of at most {MAX_DURATION:g} s")
    return [{"wav": _wav_path(root, f, i, fname), "reference": text.to_text(text.to_indices(t))} for i, fname, t in kept]


def read_audio(path: Path, qsl_idx: int | None = None) -> np.ndarray:
    """librosa.load(path, sr=16000) of a 16 kHz file: mono float32 samples."""
    import soundfile as sf

    where = f"audio file {path}" + (f" (qsl_idx {qsl_idx})" if qsl_idx is not None else "")
    try:
        x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except FileNotFoundError:
        raise KitError(f"{where} is missing; restore it, never skip it") from None
    except (RuntimeError, OSError) as e:  # soundfile raises LibsndfileError (a RuntimeError)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise KitError(f"{where} is unreadable: {first}") from None
    if sr != SAMPLE_RATE:
        raise KitError(f"{where} is {sr} Hz; the Whisper set is {SAMPLE_RATE} Hz WAV")
    return x.mean(axis=1, dtype=np.float32) if x.shape[1] > 1 else x[:, 0]


def feature_extractor(model_path: Path):
    from transformers import WhisperFeatureExtractor

    from evalkit.util import load_or_explain

    f = Path(model_path) / "preprocessor_config.json"
    if not f.is_file():
        raise KitError(f"{f} not found; the Whisper checkpoint dir must hold the feature extractor's config.")
    fe = load_or_explain("Whisper feature extractor", Path(model_path), WhisperFeatureExtractor.from_pretrained,
                         str(model_path))
    if fe.sampling_rate != SAMPLE_RATE:
        raise KitError(f"{f}: sampling_rate {fe.sampling_rate}, the reference feeds {SAMPLE_RATE} Hz audio")
    return fe


class LibriSpeechRepack(Dataset):
    def __init__(self, root: Path, model_path: Path | None):
        from language import hf_checkpoint_dir

        self.root = Path(root)
        self.clips = read_manifest(self.root)
        self.size = len(self.clips)
        self.index_file = self.root / MANIFEST
        self.model_path = Path(model_path) if model_path is not None else None
        self.fe = None
        if model_path is not None:  # the checkpoint's feature and scoring files, before the model loads
            self.fe = feature_extractor(hf_checkpoint_dir(model_path, "Whisper"))
            text.normalizer(model_path)

    def load(self, index: int) -> np.ndarray:
        if not 0 <= index < self.size:
            raise KitError(f"clip {index} is outside {self.root / MANIFEST} ({self.size} kept)")
        if self.fe is None:  # opened without a checkpoint (data add): the layout's own (synthetic model/, data/models/)
            self.fe = feature_extractor(BENCHMARK.accuracy_model_path(self.root))
        audio = read_audio(self.clips[index]["wav"], index)
        feats = self.fe(audio, sampling_rate=SAMPLE_RATE, return_tensors="np")["input_features"][0]
        return np.ascontiguousarray(feats, dtype=np.float32)

    def check_available(self, start: int, stop: int) -> None:
        # the WAV headers only: a missing, empty, foreign or truncated file fails before the model loads
        librispeech.check_wavs([u["wav"] for u in self.clips], start, stop, "Whisper", "the reference's repackaged WAV")


class _Transcriber:
    """What load_model returns: model, tokenizer, decoder prompt ids, stop ids, settings."""

    def __init__(self, model, tok, prompt: list[int], eos: list[int], max_new_tokens: int, device: str):
        self.model, self.tok, self.prompt, self.eos = model, tok, prompt, eos
        self.max_new_tokens, self.device = max_new_tokens, device

    def greedy(self, feats) -> list[list[int]]:
        """Greedy decoding of a batch of log-mel features [B, mels, 3000]: the generated ids of each,
        up to and including the first stop id (the prompt excluded)."""
        import torch

        m = self.model
        B = feats.shape[0]
        with torch.inference_mode():
            enc = m.get_encoder()(input_features=feats)
            step_ids = torch.tensor([self.prompt] * B, dtype=torch.long, device=feats.device)
            stops = torch.tensor(self.eos, dtype=torch.long, device=feats.device)
            past, out = None, [[] for _ in range(B)]
            live = torch.ones(B, dtype=torch.bool)
            for _ in range(self.max_new_tokens):
                o = m(encoder_outputs=enc, decoder_input_ids=step_ids, past_key_values=past, use_cache=True)
                past = o.past_key_values
                nxt = o.logits[:, -1, :].float().argmax(-1)
                host = nxt.cpu()
                for r in torch.nonzero(live).flatten().tolist():
                    out[r].append(int(host[r]))
                live &= ~torch.isin(host, stops.cpu())
                if not live.any():
                    break
                step_ids = nxt[:, None]
        return out


class Whisper(Benchmark):
    name = "whisper"
    mlperf_name = "whisper"
    checker_names = {"99": "whisper"}
    default_accuracy_target = "99"
    dataset_size = 1633
    performance_sample_count = 1633
    payload_dtype = "int64"       # reference_SUT.py: array('q') of label indices
    default_batch_size = 16
    synthetic_n = 8
    options = dict(GEN_DEFAULTS)

    # --- data -----------------------------------------------------------------
    def open_dataset(self, path: Path, model_path: Path | None = None, options: dict | None = None):
        return LibriSpeechRepack(Path(path), model_path)

    def fingerprint(self, dataset_path: Path, model_path: Path) -> dict:
        from language import hf_checkpoint_dir

        hf_checkpoint_dir(model_path, "Whisper")
        read_manifest(Path(dataset_path))  # KitError naming the manifest; every file's content: the core
        return {}

    # --- model ----------------------------------------------------------------
    def load_model(self, model_path: Path, device: str, data_type: str, options: dict) -> _Transcriber:
        from transformers import WhisperForConditionalGeneration

        from evalkit.hf_files import check_dir
        from language import hf_checkpoint_dir
        from language.llm import load_tokenizer, stop_ids

        new = int(options.get("max_new_tokens", GEN_DEFAULTS["max_new_tokens"]))
        if new < 1:
            raise KitError(f"--option max_new_tokens={new}: must be at least 1")
        mp = hf_checkpoint_dir(model_path, "Whisper")
        check_dir(mp, "the Whisper checkpoint")
        tok = load_tokenizer(mp, "Whisper", padding_side="right")
        prompt = [tok.convert_tokens_to_ids(t) for t in PROMPT]
        if any(i is None or i == tok.unk_token_id and t != tok.unk_token for i, t in zip(prompt, PROMPT)):
            raise KitError(f"the Whisper tokenizer in {mp} lacks one of {' '.join(PROMPT)}; it is not a Whisper "
                           f"tokenizer.")
        try:
            model = WhisperForConditionalGeneration.from_pretrained(str(mp), dtype=self.torch_dtype(data_type))
        except (OSError, ValueError, RuntimeError, KeyError) as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise KitError(f"cannot load Whisper from {mp} ({type(e).__name__}: {msg}).") from None
        model.eval().to(device)
        eos = stop_ids(tok, model)
        return _Transcriber(model, tok, prompt, [eos] if isinstance(eos, int) else eos, new, device)

    def compile_model(self, t: _Transcriber, compile_fn) -> _Transcriber:
        import copy

        compiled = copy.copy(t.model)
        compiled.forward = compile_fn(t.model.forward)
        return _Transcriber(compiled, t.tok, t.prompt, t.eos, t.max_new_tokens, t.device)

    def make_batch(self, samples: Sequence[Any], device: str, data_type: str, options: dict) -> Any:
        import torch

        return torch.from_numpy(np.stack(samples)).to(device=device, dtype=self.torch_dtype(data_type))

    def forward(self, t: _Transcriber, feats: Any) -> list[np.ndarray]:
        rows = t.greedy(feats)
        texts = t.tok.batch_decode(rows, skip_special_tokens=True)
        return [np.asarray(text.hypothesis_indices(s), dtype=np.int64) for s in texts]

    def postprocess(self, outputs: list[np.ndarray], n: int) -> list[np.ndarray]:
        return [np.ascontiguousarray(o, dtype=np.int64) for o in outputs[:n]]

    # --- accuracy -------------------------------------------------------------
    def score(self, pairs: Iterable[tuple[int, np.ndarray]], dataset_path: Path, n_count: int,
              model_path: Path | None = None) -> dict:
        clips = read_manifest(Path(dataset_path))
        norm = text.normalizer(self.accuracy_model_path(Path(dataset_path), model_path))
        utterances = []
        for q, arr in pairs:
            if q >= len(clips):
                raise KitError(f"qsl_idx {q} has no clip in {Path(dataset_path) / MANIFEST} ({len(clips)} kept)")
            if arr.size and (arr.min() < 0 or arr.max() >= len(text.LABELS)):
                raise KitError(f"qsl_idx {q}: the payload holds {int(arr.min())}..{int(arr.max())}, not character "
                               f"indices 0..{len(text.LABELS) - 1}; check the payload dtype (int64)")
            utterances.append((norm(text.to_text(arr)).split(), norm(clips[q]["reference"]).split()))
        errors, words = text.errors_total(utterances)
        if not words:
            raise KitError("the scored clips have no reference words after normalisation; WER is undefined")
        wer = errors / words
        # accuracy_eval.py prints wer * 100 and (1 - wer) * 100 (negative above 100 % WER, which the
        # checker's pattern cannot read: check marks such a row failed)
        return {"ACCURACY": (1 - wer) * 100, "wer": wer * 100, "errors": errors, "words": words}

    def accuracy_lines(self, metrics: dict) -> list[str]:
        return ["Word Error Rate: {:}%, accuracy={:}%".format(float(metrics["wer"]), float(metrics["ACCURACY"]))]

    # --- synthetic ------------------------------------------------------------
    def synthesize(self, out: Path, n: int, seed: int) -> list[np.ndarray]:
        from .synthetic import write_synthetic

        return write_synthetic(self, Path(out), n, seed)

    def synthetic_reference(self) -> dict[str, float]:
        return {"ACCURACY": 100.0}


BENCHMARK = Whisper()
