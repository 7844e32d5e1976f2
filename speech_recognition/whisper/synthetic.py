"""Synthetic LibriSpeech set for Whisper: a Whisper-shaped byte-level BPE tokenizer built here
(<|endoftext|> as bos/eos/pad, the task and language tokens of the decoder prompt), the checkpoint's
preprocessor_config.json (WhisperFeatureExtractor, 128 mel bins as large-v3) and normalizer.json
(a small British->American spelling map in the published format), a tiny random
WhisperForConditionalGeneration of the real architecture (the 30 s window: 1500 encoder positions,
tied output projection), and the repackaged layout: dev-all-repack.json naming its WAVs by the
reference container's absolute path, 16 kHz 16-bit PCM clips, each `transcript` the model's own
fp32 batch-1 transcription."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from evalkit.errors import KitError
from evalkit.synth import distinct, link_copy
from language.synthtext import lexicon

SPECIAL = ("<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|translate|>",
           "<|nocaptions|>", "<|notimestamps|>")
SPELLING = {"colour": "color", "favourite": "favorite", "centre": "center", "organise": "organize",
            "travelling": "traveling", "grey": "gray", "theatre": "theater", "honour": "honor"}
CLIP_DIR = "dev-all-repack"
_MAX_DISTINCT = 200  # clips a set transcribes at most (see write_synthetic)
EOS_GAIN = 2.0       # how soon transcriptions end (most within 30 tokens, some run to the 200 cap)
MAX_WORDS = 40       # clips whose transcription is longer are not kept


def _audio(rng: np.random.Generator, sr: int) -> np.ndarray:
    """1-4 s of "speech": tone stacks and noise bands at distinct frequencies over a noise floor."""
    centres = [200, 350, 500, 700, 950, 1250, 1600, 2000, 2600, 3300, 4200, 5500]
    parts = [rng.normal(0, 0.01, int(0.2 * sr))]
    for _ in range(int(rng.integers(5, 16))):
        n = int(rng.uniform(0.1, 0.3) * sr)
        t = np.arange(n) / sr
        c = centres[int(rng.integers(len(centres)))]
        if rng.random() < 0.6:
            seg = sum(np.sin(2 * np.pi * c * (1 + 0.2 * k) * t + rng.uniform(0, 6.3)) for k in range(3))
        else:
            seg = rng.normal(0, 1, n) * np.sin(2 * np.pi * c * t)
        parts += [0.2 * seg * np.hanning(n), rng.normal(0, 0.01, int(rng.uniform(0.02, 0.1) * sr))]
    return np.concatenate(parts)


def _model(seed: int, tok, model_dir: Path):
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from language.synthllm import restrict_lm_head, row_texts

    eot, sot = tok.convert_tokens_to_ids("<|endoftext|>"), tok.convert_tokens_to_ids("<|startoftranscript|>")
    cfg = WhisperConfig(vocab_size=len(tok), num_mel_bins=128, d_model=64, encoder_layers=2, decoder_layers=2,
                        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128,
                        max_source_positions=1500, max_target_positions=448, pad_token_id=eot, bos_token_id=eot,
                        eos_token_id=eot, decoder_start_token_id=sot, suppress_tokens=[], begin_suppress_tokens=[],
                        architectures=["WhisperForConditionalGeneration"],
                        tie_word_embeddings=False)  # tied, a token's own logit dwarfs the rest: it repeats itself
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = WhisperForConditionalGeneration(cfg).eval()
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.dim() == 2 and "embed_positions" not in name and "proj_out" not in name:  # the encoder's sinusoids stay
                    p.normal_(0.0, 2.0 / p.shape[1] ** 0.5)
            model.model.decoder.embed_tokens.weight.normal_(0.0, 1.0)
            model.proj_out.weight.normal_(0.0, 1.0)
            model.model.decoder.embed_positions.weight.normal_(0.0, 1.0)
            # the transcription must follow the audio: sharp, strong cross-attention, weaker self-attention
            for layer in model.model.decoder.layers:
                layer.encoder_attn.q_proj.weight.mul_(3.0)
                layer.encoder_attn.k_proj.weight.mul_(3.0)
                layer.encoder_attn.out_proj.weight.mul_(4.0)
                layer.self_attn.out_proj.weight.mul_(0.5)
        # whole words only (a space and letters/digits), EOS often enough that transcriptions end early
        restrict_lm_head(model.proj_out.weight, row_texts(tok, cfg.vocab_size),
                         lambda t: float(t not in SPECIAL and t[:1] == " " and t[1:].isalnum()), eot, EOS_GAIN)
    model.save_pretrained(str(model_dir))


def write_synthetic(bench, out: Path, n: int, seed: int) -> list[np.ndarray]:
    import soundfile as sf
    import torch
    from transformers import WhisperFeatureExtractor

    from language.synthllm import synth_dirs, train_bpe

    from .benchmark import MANIFEST, SAMPLE_RATE
    from . import text

    ds_dir, model_dir = synth_dirs(out)
    rng = np.random.default_rng([seed, 2025])
    words = lexicon(rng, 300)
    tok = train_bpe(rng, [w for w in words], model_dir, 600, SPECIAL, [" ".join(SPELLING)],
                    bos_token=SPECIAL[0], eos_token=SPECIAL[0], unk_token=SPECIAL[0], pad_token=SPECIAL[0])
    WhisperFeatureExtractor(feature_size=128, sampling_rate=SAMPLE_RATE).save_pretrained(str(model_dir))
    (model_dir / text.NORMALIZER_FILE).write_text(json.dumps(SPELLING, indent=2) + "\n")
    _model(seed, tok, model_dir)

    (ds_dir / CLIP_DIR).mkdir(exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread beats contended cores
    try:
        g = bench.load_model(model_dir, "cpu", "fp32", {})
        fe = WhisperFeatureExtractor.from_pretrained(str(model_dir))
        norm = text.normalizer(model_dir)
        entries, payloads, seen = [], [], set()
        # clips transcribed; beyond them the set repeats them (scale variant). The tiny random model's
        # distinct transcriptions thin out (seed 0: 251 in the first 3,072 clips), so fewer than
        # DISTINCT_MAX are computed, and a clip is tried 15 times per sample wanted (was 6: a bound
        # that only ever ended failed runs)
        n_all, n = n, min(distinct(n), _MAX_DISTINCT)
        tries = 15 * n
        for i in range(tries):
            pcm = (np.clip(_audio(rng, SAMPLE_RATE), -1, 1 - 2 ** -15) * 32768).astype(np.int16)
            audio = pcm.astype(np.float32) / 32768  # what soundfile reads back
            feats = fe(audio, sampling_rate=SAMPLE_RATE, return_tensors="np")["input_features"]
            out_ids = bench.postprocess(bench.forward(g, torch.from_numpy(feats)), 1)[0]
            words_out = norm(text.to_text(out_ids)).split()
            # WER needs words; a shift must change them; a transcription that ran to the 200-token cap
            # would make every run of the set decode 200 steps for it
            if not 2 <= len(words_out) <= MAX_WORDS or " ".join(words_out) in seen:
                continue
            seen.add(" ".join(words_out))
            name = f"{1272 + i}-{128104 + i}_0.wav"
            sf.write(str(ds_dir / CLIP_DIR / name), pcm, SAMPLE_RATE, subtype="PCM_16")
            dur = len(pcm) / SAMPLE_RATE
            entries.append({"transcript": text.to_text(out_ids),
                            "files": [{"channels": 1, "sample_rate": float(SAMPLE_RATE), "bitdepth": 16,
                                       "bitrate": 256000.0, "duration": dur, "num_samples": len(pcm),
                                       "encoding": "Signed Integer PCM", "silent": False,
                                       "fname": f"/data/{CLIP_DIR}/{name}", "speed": 1}],
                            "original_duration": dur, "original_num_samples": len(pcm)})
            payloads.append(out_ids)
            if len(entries) == n:
                break
    finally:
        torch.set_num_threads(threads)
    if len(entries) < n:
        raise KitError(f"synthetic whisper: only {len(entries)} of {tries} clips gave a usable transcription "
                       f"(seed {seed}); try another --seed.")
    for k in range(n, n_all):  # clip k is a copy of clip k % n under its own name (a hard link where allowed)
        entry = json.loads(json.dumps(entries[k % n]))
        f = entry["files"][0]
        src = f["fname"].rsplit("/", 1)[1]
        name = f"{src[:-len('_0.wav')]}_{k // n}.wav"
        link_copy(ds_dir / CLIP_DIR / src, ds_dir / CLIP_DIR / name)
        f["fname"] = f"/data/{CLIP_DIR}/{name}"
        entries.append(entry)
        payloads.append(payloads[k % n])
    (ds_dir / MANIFEST).write_text(json.dumps(entries, indent=2))
    return payloads
