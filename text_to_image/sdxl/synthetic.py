"""Synthetic SDXL set: the reference layouts with tiny random networks.

out/dataset: captions/captions.tsv (reference columns), latents/latents.pt (1, 4, L, L),
  tools/val2014.npz (FID statistics), tools/clip/ (a transformers CLIPModel + tokenizer),
  tools/inception/pt_inception-2015-12-05-6726825d.pth (FID Inception state dict, narrow).
out/model: a diffusers StableDiffusionXLPipeline dir: small UNet with text-time embedding,
  small VAE, two small CLIP text encoders, CLIP tokenizers built here (vocab.json +
  merges.txt from a BPE learned on the caption words), EulerDiscrete scheduler config.
  Images are IMAGE_SIDE px a side (unet sample_size x VAE factor 2; SDXL base: 1024).

Ground truth = the saved pipeline's own fp32 batch-1 images through the kit's load path.
Two calibrations make the metrics usable as references:
- pixels off the rounding edges: the VAE decoder's last conv is scaled so that nearly
  every value saturates the [0, 1] clamp, and a caption is redrawn until every value
  clears the clamp edge by a margin far above fp32 noise. A batch size, thread count or
  partitioning then cannot flip one pixel: an fp32 run reproduces the truth byte for byte
  (as resnet skips near-tied logits);
- CLIP knows its captions: the CLIP projections are solved so that each truth image and
  its caption embed onto the same vector of an orthonormal set. The truth scores
  CLIP_PERFECT (100 * cos = 100); an index shift pairs orthogonal vectors and scores 0.
FID is measured against statistics of separate random pictures; it is not
index-sensitive (a permutation keeps the set), so it is the measured reference.
"""
from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np

from evalkit.errors import KitError

from .benchmark import (CAPTION_COLUMNS, CAPTIONS, CLIP_DIR, INCEPTION, LATENTS, STATISTICS, tokenize)
from .fid import INCEPTION_FILE, RunningStats, build_inception, image_batch

CLIP_PERFECT = 100.0
LATENT_SIDE = 16
IMAGE_SIDE = 2 * LATENT_SIDE      # the VAE below upsamples once
TEXT_HIDDEN = 16
SAT_STD = 1e5                     # std of the decoder output: |x| >= 1 saturates the clamp
MARGIN = 1e-4                     # every |x| must exceed 1 by MARGIN * std (fp32 noise is ~1e-5 * std)
INCEPTION_DIV = 256               # FID Inception widths // 256: 6-d features
MIN_N = 8                         # FID needs more images than features for a full-rank covariance
MAX_ATTEMPTS = 30
N_MERGES = 80
REFERENCE_IMAGES = 64

_ADJ = ("red", "small", "large", "wooden", "old", "white", "black", "green", "shiny", "striped", "busy",
        "quiet", "yellow", "broken", "tall", "tiny")
_NOUN = ("cat", "dog", "man", "woman", "bus", "train", "plate of food", "bicycle", "kitchen", "horse",
         "clock tower", "pizza", "surfer", "giraffe", "boat", "laptop")
_VERB = ("sitting", "standing", "parked", "waiting", "resting", "shown", "lying", "displayed")
_PLACE = ("on a table", "near the window", "in a field", "on the street", "next to a fence", "by the beach",
          "in a living room", "under a tree", "at the station", "on a snowy hill")


def _caption(rng: np.random.Generator) -> str:
    pick = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
    return f"A {pick(_ADJ)} {pick(_NOUN)} {pick(_VERB)} {pick(_PLACE)}."


# --------------------------------------------------------------------------- tokenizers

def _byte_chars() -> list[str]:
    """GPT-2/CLIP byte-to-unicode table in CLIP's vocab order: printable bytes as themselves,
    then the other bytes mapped to chr(256 + k)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) \
        + list(range(ord("\xae"), ord("\xff") + 1))
    rest = [b for b in range(256) if b not in keep]
    return [chr(b) for b in keep] + [chr(256 + k) for k in range(len(rest))]


def _learn_merges(words: list[str], n_merges: int) -> list[tuple[str, str]]:
    """Plain BPE on the words (CLIP style: the last symbol of a word carries '</w>')."""
    corpus = Counter(tuple(w[:-1]) + (w[-1] + "</w>",) for w in words if w)
    merges = []
    for _ in range(n_merges):
        pairs: Counter = Counter()
        for word, k in corpus.items():
            for a, b in zip(word, word[1:]):
                pairs[a, b] += k
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        new: Counter = Counter()
        for word, k in corpus.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            new[tuple(out)] += k
        corpus = new
    return merges


def write_tokenizer(dst: Path, merges: list[tuple[str, str]], pad: str) -> int:
    """vocab.json + merges.txt + configs as the SDXL tokenizer dirs hold them; returns the vocab size."""
    dst.mkdir(parents=True, exist_ok=True)
    chars = _byte_chars()
    vocab: dict[str, int] = {}
    for tok in chars + [c + "</w>" for c in chars] + [a + b for a, b in merges]:
        vocab.setdefault(tok, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    (dst / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (dst / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    specials = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
                "pad_token": pad}
    (dst / "special_tokens_map.json").write_text(json.dumps(specials, indent=2))
    (dst / "tokenizer_config.json").write_text(json.dumps(
        dict(specials, tokenizer_class="CLIPTokenizer", model_max_length=77, do_lower_case=True,
             errors="replace", add_prefix_space=False), indent=2))
    return len(vocab)


# --------------------------------------------------------------------------- networks

def _text_config(vocab_size: int, act: str, hidden: int = TEXT_HIDDEN, proj: int = TEXT_HIDDEN):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                          num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77,
                          projection_dim=proj, hidden_act=act, bos_token_id=vocab_size - 2,
                          eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1)


def _build_pipeline(tok_dir: Path, tok2_dir: Path, vocab_size: int, image_side: int = IMAGE_SIDE):
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    # SDXL: CLIP-L (quick_gelu) + bigG with projection (gelu); penultimate states side by side
    te = CLIPTextModel(_text_config(vocab_size, "quick_gelu")).eval()
    te2 = CLIPTextModelWithProjection(_text_config(vocab_size, "gelu")).eval()
    unet = UNet2DConditionModel(
        sample_size=LATENT_SIDE, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=4, transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=4 * 6 + TEXT_HIDDEN, cross_attention_dim=2 * TEXT_HIDDEN,
        norm_num_groups=4).eval()
    blocks = 1 + (image_side // LATENT_SIDE).bit_length() - 1  # one upsampling per block after the first
    vae = AutoencoderKL(
        block_out_channels=(16,) * blocks, in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * blocks, up_block_types=("UpDecoderBlock2D",) * blocks,
        sample_size=image_side, norm_num_groups=4, scaling_factor=0.13025, force_upcast=True).eval()
    if blocks > 2:
        _copying_decoder(vae.decoder)
    # stable-diffusion-xl-base-1.0's scheduler config
    sched = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                   num_train_timesteps=1000, prediction_type="epsilon", steps_offset=1,
                                   timestep_spacing="leading", interpolation_type="linear", use_karras_sigmas=False)
    return StableDiffusionXLPipeline(vae=vae, text_encoder=te, text_encoder_2=te2,
                                     tokenizer=CLIPTokenizer.from_pretrained(tok_dir),
                                     tokenizer_2=CLIPTokenizer.from_pretrained(tok2_dir),
                                     unet=unet, scheduler=sched, add_watermarker=False)


def _copying_decoder(decoder) -> None:
    """The image_side option's decoder: every up block after the first makes each pixel 2x2 copies
    (its resnets add zero, its upsampling conv is the identity) and conv_out reads one pixel, so an
    image is a 32 px picture with every pixel a 32x32 square (for 1024 px): its values clear the
    clamp edges as the 32 px ones do (module doc), at the real payload size."""
    import torch

    with torch.no_grad():
        for block in decoder.up_blocks[1:]:
            for res in block.resnets:
                res.conv2.weight.zero_()
                res.conv2.bias.zero_()
            for up in block.upsamplers or []:
                w = up.conv.weight
                w.zero_()
                w[torch.arange(w.shape[0]), torch.arange(w.shape[0]), 1, 1] = 1.0
                up.conv.bias.zero_()
        w = decoder.conv_out.weight
        centre = w[:, :, 1, 1].clone()
        w.zero_()
        w[:, :, 1, 1] = centre


def _sample(gen, caption: str, latents: np.ndarray) -> dict:
    return {"ids": tokenize(gen.pipe.tokenizer, [caption])[0], "ids_2": tokenize(gen.pipe.tokenizer_2, [caption])[0],
            "latents": latents}


class _DecoderTap:
    """Keeps the VAE decoder's output (before the pipeline's clamp) of the last forward."""

    def __init__(self, pipe):
        self.x = None
        self.handle = pipe.vae.decoder.register_forward_hook(self._keep)

    def _keep(self, module, inputs, output):
        self.x = output.detach().float().cpu().numpy()


def _reference_image(rng: np.random.Generator) -> np.ndarray:
    """A smooth random picture (upsampled coarse colours plus noise) for the FID statistics."""
    from PIL import Image

    coarse = rng.uniform(0, 255, (4, 4, 3)).astype(np.uint8)
    img = np.asarray(Image.fromarray(coarse).resize((IMAGE_SIDE, IMAGE_SIDE), Image.BICUBIC), dtype=np.float32)
    img += rng.normal(0, rng.uniform(2, 20), img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _write_inception(dst: Path, references: list[np.ndarray], seed: int):
    """Random narrow FID Inception; BN running stats set to the reference pictures' own
    statistics so that activations vary between images instead of dying in the ReLUs."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_inception(INCEPTION_DIV)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        net.train()
        net(image_batch(references, "cpu"))
        net.eval()
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, dst)  # the published file has no num_batches_tracked either
    return net


_CLIP_TIGHT_N = 32  # sets up to this size keep n + 2 features (their bytes unchanged)


def _write_clip(dst: Path, tok_dir: Path, vocab_size: int, images: list[np.ndarray], captions: list[str],
                seed: int) -> None:
    """Tiny CLIPModel whose projections map each truth image and its caption to the same
    orthonormal vector (least squares on the pooled features, solved exactly)."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    from .clip_score import ClipScorer

    n = len(images)
    # Features must outnumber the samples for an exact fit, and clearly: the projection's size grows
    # as the pooled features' smallest singular value shrinks, and it multiplies the float32 rounding
    # of features computed at another batch size. 512 images in 528 features scored 99.99915 at
    # batch 64 (the scale variant's failure at 5,000); in 1,024, 99.999985.
    width = 16 * ((n + 2 + 15) // 16) if n <= _CLIP_TIGHT_N else 16 * ((2 * n + 15) // 16)
    cfg = CLIPConfig(text_config=_text_config(vocab_size, "quick_gelu", width, width).to_dict(),
                     vision_config=dict(image_size=224, patch_size=32, hidden_size=width, intermediate_size=2 * width,
                                        num_hidden_layers=2, num_attention_heads=2, hidden_act="quick_gelu"),
                     projection_dim=width)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(cfg).eval()
    dst.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dst)
    for f in tok_dir.iterdir():
        shutil.copy(f, dst / f.name)
    del model
    # Pooled features exactly as the scorer computes them, from the saved dir.
    scorer = ClipScorer(dst, "cpu")
    m = scorer.model
    from .clip_score import clean_caption, preprocess

    with torch.inference_mode():
        hv = m.vision_model(pixel_values=torch.from_numpy(np.stack([preprocess(im) for im in images]))).pooler_output
        ids = scorer.tok([clean_caption(c) for c in captions], padding="max_length", truncation=True,
                         max_length=scorer.max_len, return_tensors="pt").input_ids
        ht = m.text_model(input_ids=ids).pooler_output
    rng = np.random.default_rng([seed, 7])
    q, _ = np.linalg.qr(rng.normal(size=(width, width)))
    targets = q[:n]  # orthonormal rows: caption i and image i -> targets[i]
    weights = {}
    for name, h in (("visual_projection", hv), ("text_projection", ht)):
        h = h.double().numpy()
        sol, *_ = np.linalg.lstsq(h, targets, rcond=None)  # h @ sol = targets
        err = float(np.abs(h @ sol - targets).max())
        if err > 1e-6:
            raise KitError(f"synthetic CLIP: the {name} features of the truth set are degenerate "
                           f"(fit error {err:.2g}); try another --seed")
        weights[f"{name}.weight"] = torch.from_numpy(sol.T.astype(np.float32))
    model = CLIPModel.from_pretrained(dst).eval()
    with torch.no_grad():
        for k, v in weights.items():
            model.get_parameter(k).copy_(v)
    model.save_pretrained(dst)


# --------------------------------------------------------------------------- the set

def synthesize(bench, out: Path, n: int, seed: int, image_side: int = IMAGE_SIDE) -> list[np.ndarray]:
    import torch

    sides = [IMAGE_SIDE << k for k in range(8)]
    if image_side not in sides:
        raise KitError(f"--option image_side={image_side}: the synthetic SDXL images are one of "
                       f"{', '.join(map(str, sides))} px a side (the real set: 1024)")

    # The tiny networks' ops are too small to split over threads: one thread is faster, and
    # far faster on a shared machine (the truth does not depend on it, see the module doc).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _synthesize(bench, out, n, seed, image_side)
    finally:
        torch.set_num_threads(threads)


def _synthesize(bench, out: Path, n: int, seed: int, image_side: int) -> list[np.ndarray]:
    import torch

    if n < MIN_N:
        raise KitError(f"--n {n}: a synthetic SDXL set needs at least {MIN_N} samples (FID over a "
                       f"{MIN_N - 2}-feature Inception needs a full-rank covariance)")
    ds_dir, model_dir = out / "dataset", out / "model"
    ds_dir.mkdir(parents=True, exist_ok=True)
    model_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 0])

    # 1. tokenizers: BPE merges learned on the caption vocabulary
    words = " ".join(_ADJ + _NOUN + _VERB + _PLACE).lower().split()
    merges = _learn_merges(words, N_MERGES)
    tok_tmp = out / "model.tokenizers"
    vocab_size = write_tokenizer(tok_tmp / "tokenizer", merges, pad="<|endoftext|>")
    write_tokenizer(tok_tmp / "tokenizer_2", merges, pad="!")  # SDXL's second tokenizer pads with '!'

    # 2. random pipeline; the decoder's last conv scaled so the clamp saturates (see module doc)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        pipe = _build_pipeline(tok_tmp / "tokenizer", tok_tmp / "tokenizer_2", vocab_size, image_side)
        latents = torch.randn(1, 4, LATENT_SIDE, LATENT_SIDE, generator=torch.Generator().manual_seed(seed))
    lat = latents.numpy()
    from .benchmark import NEGATIVE_PROMPT, _SDXL

    neg = [NEGATIVE_PROMPT]
    calib = _SDXL(pipe, torch.from_numpy(tokenize(pipe.tokenizer, neg)), torch.from_numpy(tokenize(pipe.tokenizer_2, neg)),
                  dict(bench.options))
    tap = _DecoderTap(pipe)
    bench.forward(calib, bench.make_batch([_sample(calib, _caption(rng), lat)], "cpu", "fp32", {}))
    tap.handle.remove()
    with torch.no_grad():
        scale = SAT_STD / float(np.std(tap.x))
        pipe.vae.decoder.conv_out.weight.mul_(scale)
        pipe.vae.decoder.conv_out.bias.mul_(scale)
    pipe.save_pretrained(model_dir)
    for name in ("tokenizer", "tokenizer_2"):  # the published dirs: vocab.json + merges.txt + configs
        shutil.rmtree(model_dir / name)
        shutil.copytree(tok_tmp / name, model_dir / name)
    shutil.rmtree(tok_tmp)
    del pipe, calib
    (ds_dir / LATENTS).parent.mkdir(parents=True, exist_ok=True)
    torch.save(latents, ds_dir / LATENTS)

    # 3. ground truth through the kit's own load path, fp32, batch 1
    gen = bench.load_model(model_dir, "cpu", "fp32", {})
    tap = _DecoderTap(gen.pipe)
    from evalkit.synth import distinct as n_distinct, tile

    captions, payloads, used = [], [], set()
    n_all, n = n, n_distinct(n)  # images generated; beyond them the set repeats them (scale variant)
    for i in range(n):
        for attempt in range(MAX_ATTEMPTS):
            cap = _caption(np.random.default_rng([seed, 1, i, attempt]))
            if cap in used:
                continue
            outputs = bench.forward(gen, bench.make_batch([_sample(gen, cap, lat)], "cpu", "fp32", {}))
            x = tap.x
            if float(np.abs(x).min()) >= 1.0 + MARGIN * float(np.std(x)):
                break
        else:
            raise KitError(f"could not draw synthetic sample {i} with every pixel clear of the rounding edges "
                           f"in {MAX_ATTEMPTS} tries (seed {seed}); try another seed.")
        used.add(cap)
        captions.append(cap)
        payloads.append(bench.postprocess(outputs, 1)[0])
    tap.handle.remove()
    distinct = len({p.tobytes() for p in payloads})
    if distinct < n:
        raise KitError(f"the synthetic images are not distinct ({distinct} of {n}; seed {seed}); try another seed.")

    # 4. the dataset files in the reference layout
    (ds_dir / CAPTIONS).parent.mkdir(parents=True, exist_ok=True)
    rows = ["\t".join(CAPTION_COLUMNS)]
    for i, cap in enumerate(tile(captions, n_all)):  # sample k >= n: prompt k % n under its own ids
        image_id = 100000 + i
        name = f"COCO_val2014_{image_id:012d}.jpg"
        rows.append("\t".join((str(i), str(image_id), cap, str(image_side), str(image_side), name,
                               f"http://images.cocodataset.org/val2014/{name}")))
    (ds_dir / CAPTIONS).write_text("\n".join(rows) + "\n", encoding="utf-8")

    # 5. scoring networks and FID statistics
    ref_rng = np.random.default_rng([seed, 3])
    references = [_reference_image(ref_rng) for _ in range(REFERENCE_IMAGES)]
    net = _write_inception(ds_dir / INCEPTION / INCEPTION_FILE, references, seed).double()
    stats = RunningStats(net.dims)
    with torch.inference_mode():
        for k in range(0, len(references), 16):
            stats.update(net(image_batch(references[k:k + 16], "cpu", torch.float64)).numpy())
    np.savez(ds_dir / STATISTICS, mu=stats.mean, sigma=stats.cov())
    _write_clip(ds_dir / CLIP_DIR, model_dir / "tokenizer", vocab_size, payloads, captions, seed)
    return tile(payloads, n_all)
