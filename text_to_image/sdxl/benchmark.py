"""Stable Diffusion XL on COCO-2014 captions (MLPerf `stable-diffusion-xl`, checker of the same name).

Follows the reference `text_to_image` PyTorch SUT: diffusers StableDiffusionXLPipeline from
a diffusers-format dir, EulerDiscreteScheduler from the checkpoint's scheduler config, 20
steps, guidance 8.0, the reference negative prompt; captions and the negative prompt are
tokenised padded to 77 by both tokenizers; prompt embeddings = the penultimate hidden
states of both text encoders side by side, pooled = text_encoder_2's projection; every
sample starts from the one fixed latent of the dataset. Payload: the uint8 HWC RGB image,
`(image * 255).round()` as the reference PostProcessCoco writes it.

Accuracy as `tools/accuracy_coco.py`: mean CLIP score (ViT-B/32) against each sample's
caption and FID of all images against the precomputed COCO statistics, both computed
batch by batch while the merged log streams past (a full log is ~31 GB).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from evalkit.benchmark import Benchmark, Dataset
from evalkit.errors import KitError
from evalkit.util import load_or_explain

CAPTIONS = Path("captions") / "captions.tsv"
LATENTS = Path("latents") / "latents.pt"
CAPTION_COLUMNS = ("id", "image_id", "caption", "height", "width", "file_name", "coco_url")
# Scoring networks and statistics live with the dataset (DVC), never downloaded at run time.
TOOLS = Path("tools")
STATISTICS = TOOLS / "val2014.npz"
CLIP_DIR = TOOLS / "clip"
INCEPTION = TOOLS / "inception"
NEGATIVE_PROMPT = "normal quality, low quality, worst quality, low res, blurry, nsfw, nude"
REFERENCE_SIDE = 1024
SCORE_BATCH = 16  # images per CLIP forward while scoring; bounds the scorer's memory
INCEPTION_BATCH = 4  # images per float64 Inception forward (~60 MB of activations per image)


def read_captions(root: Path) -> list[str]:
    """The caption column of <root>/captions/captions.tsv (tab-separated, reference header)."""
    root = Path(root)
    f = root / CAPTIONS
    if not root.is_dir():
        raise KitError(f"COCO-2014 dataset directory {root} does not exist; prepare captions/captions.tsv and "
                       f"latents/latents.pt there or pass the right --dataset.")
    if not f.is_file():
        raise KitError(f"{f} not found; the SDXL dataset dir must hold {CAPTIONS} (columns "
                       f"{' '.join(CAPTION_COLUMNS)}).")
    try:
        with open(f, newline="", encoding="utf-8") as fh:
            text = fh.read()
        rows = list(csv.reader(text.splitlines(keepends=True), delimiter="\t"))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise KitError(f"cannot read {f}: {e}; re-download it.") from None
    if text and not text.endswith("\n"):  # every row ends with one: a file cut short does not
        raise KitError(f"{f} does not end with a line break: it is truncated (a dropped row shifts every later "
                       f"index); re-download it.")
    if not rows or "caption" not in rows[0]:
        raise KitError(f"{f} has no header with a 'caption' column; expected {' '.join(CAPTION_COLUMNS)}.")
    col = rows[0].index("caption")
    out = []
    for lineno, row in enumerate(rows[1:], 2):
        if len(row) != len(rows[0]):
            raise KitError(f"{f} line {lineno} has {len(row)} fields, the header {len(rows[0])}; fix the file "
                           f"(a dropped row shifts every later index).")
        out.append(row[col])
    if not out:
        raise KitError(f"{f} has no captions.")
    return out


def load_latents(root: Path) -> np.ndarray:
    import torch

    f = Path(root) / LATENTS
    if not f.is_file():
        raise KitError(f"{f} not found; the SDXL dataset dir must hold the fixed latent {LATENTS} "
                       f"(a (1, 4, 128, 128) float tensor from tools/latent.py).")
    from evalkit.safeload import load_torch  # the core's one reader of pickles and checkpoints

    t = load_torch(f, "SDXL latents")
    if not isinstance(t, torch.Tensor) or t.ndim != 4 or t.shape[0] != 1 or t.shape[1] != 4:
        raise KitError(f"{f} is not a (1, 4, H, W) latent tensor (got {getattr(t, 'shape', type(t).__name__)}).")
    if t.dtype != torch.float32:  # the reference's latent is float32: another dtype is another latent
        raise KitError(f"{f} holds {str(t.dtype).replace('torch.', '')}; the reference latent is float32.")
    return t.numpy()


def pipeline_dirs(model_path: Path) -> tuple[Path, Path]:
    """(pipeline dir, dir whose scheduler/ config to use): a diffusers pipeline dir, or the
    reference layout checkpoint_pipe/ + checkpoint_scheduler/."""
    mp = Path(model_path)
    if (mp / "model_index.json").is_file():
        return mp, mp
    if (mp / "checkpoint_pipe" / "model_index.json").is_file():
        sched = mp / "checkpoint_scheduler"
        return mp / "checkpoint_pipe", sched if (sched / "scheduler").is_dir() else mp / "checkpoint_pipe"
    raise KitError(f"{mp} is not a diffusers SDXL checkpoint: no model_index.json there or in "
                   f"{mp / 'checkpoint_pipe'}; download stable-diffusion-xl-base-1.0 in diffusers format.")


def check_pipeline(model_path: Path) -> None:
    """Before any component is read: every file of the pipeline dir is sound (language/hf_files.py:
    not empty, JSON parses, safetensors whole) and each component model_index.json lists has its
    config and weights (tokenizers: their files; the scheduler: its config). KitError naming the file."""
    from evalkit.hf_files import check_dir, check_tokenizer_dir

    pipe_dir, sched_dir = pipeline_dirs(model_path)
    what = "the SDXL checkpoint"
    check_dir(pipe_dir, what, recursive=True)
    if sched_dir != pipe_dir:
        check_dir(sched_dir, what, recursive=True)
    index = json.loads((pipe_dir / "model_index.json").read_text(encoding="utf-8"))
    for name, spec in index.items():
        if name.startswith("_") or not isinstance(spec, list) or len(spec) != 2 or None in spec:
            continue
        library, cls = spec
        d = (sched_dir if name == "scheduler" else pipe_dir) / name
        if "Tokenizer" in cls:
            check_tokenizer_dir(d, f"{what} ({name})")
            continue
        config = "scheduler_config.json" if name == "scheduler" else "config.json"
        weights = [] if name == "scheduler" else (
            ["model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"] if library == "transformers"
            else ["diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json",
                  "diffusion_pytorch_model.bin"])
        for need in [[config]] + ([weights] if weights else []):
            if not any((d / f).is_file() for f in need):
                raise KitError(f"{what}: {d / need[0]} is missing ({pipe_dir / 'model_index.json'} lists the "
                               f"{name} component); restore the published file.")


def check_scoring_tools(root: Path) -> None:
    """What `check` needs to score, checked when the dataset opens, not after the whole run: the FID
    statistics (read: mean and covariance), the FID Inception weights (a whole torch file) and the
    CLIP scorer's dir (files sound, config, weights and tokenizer present)."""
    from evalkit.hf_files import check_dir, check_tokenizer_dir

    from .fid import INCEPTION_FILE, read_statistics, torch_file_problem

    root = Path(root)
    read_statistics(root / STATISTICS)
    inception = root / INCEPTION / INCEPTION_FILE
    problem = torch_file_problem(inception)
    if problem is not None:
        raise KitError(f"FID Inception weights {inception} {problem}; put pytorch-fid's {INCEPTION_FILE} there "
                       f"(the kit never downloads it).")
    clip = root / CLIP_DIR
    what = "the CLIP scorer (ViT-B/32, transformers format)"
    if not clip.is_dir():
        raise KitError(f"{what}: {clip} does not exist; put openai/clip-vit-base-patch32 there (the kit never "
                       f"downloads it).")
    check_dir(clip, what)
    for need in ("config.json", "model.safetensors"):
        if not (clip / need).is_file() and not (need == "model.safetensors" and (clip / "pytorch_model.bin").is_file()):
            raise KitError(f"{what}: {clip / need} is missing; restore the published file.")
    check_tokenizer_dir(clip, what)


def load_tokenizers(model_path: Path):
    from transformers import CLIPTokenizer

    pipe_dir, _ = pipeline_dirs(model_path)
    check_pipeline(model_path)
    return tuple(load_or_explain("SDXL tokenizer", pipe_dir / sub, CLIPTokenizer.from_pretrained, pipe_dir / sub)
                 for sub in ("tokenizer", "tokenizer_2"))


def tokenize(tok, texts: list[str]) -> np.ndarray:
    # The reference pads every prompt to the tokenizer's model_max_length (77) and truncates.
    return tok(texts, padding="max_length", max_length=tok.model_max_length, truncation=True,
               return_tensors="np").input_ids.astype(np.int64)


class CocoCaptions(Dataset):
    def __init__(self, root: Path, model_path: Path):
        self.root = Path(root)
        self.captions = read_captions(self.root)
        self.size = len(self.captions)
        self.latents = load_latents(self.root)
        check_scoring_tools(self.root)  # scoring needs them after the run: missing ones fail now
        self.tok, self.tok_2 = load_tokenizers(model_path)

    def load(self, index: int) -> dict:
        if not 0 <= index < self.size:
            raise KitError(f"sample index {index} is outside {self.root / CAPTIONS} ({self.size} captions).")
        text = [self.captions[index]]
        # The latent is shared, not copied: make_batch stacks one reference per sample.
        return {"ids": tokenize(self.tok, text)[0], "ids_2": tokenize(self.tok_2, text)[0], "latents": self.latents}

    def check_available(self, start: int, stop: int) -> None:
        pass  # every file was read when the dataset opened; the core checks the range


class _SDXL:
    """The loaded pipeline plus the reference's pre-tokenised negative prompt."""

    def __init__(self, pipe, neg_ids, neg_ids_2, options: dict):
        self.pipe, self.neg_ids, self.neg_ids_2, self.options = pipe, neg_ids, neg_ids_2, options


def _encode(pipe, ids, ids_2):
    """The reference encode_tokens: penultimate hidden states of both encoders, concatenated;
    pooled = text_encoder_2's projected output."""
    import torch

    hidden = []
    pooled = None
    for enc, x in ((pipe.text_encoder, ids), (pipe.text_encoder_2, ids_2)):
        out = enc(x, output_hidden_states=True)
        pooled = out[0]
        hidden.append(out.hidden_states[-2])
    return torch.cat(hidden, dim=-1).to(dtype=pipe.text_encoder_2.dtype), pooled


class StableDiffusionXL(Benchmark):
    name = "stablediffusion"
    mlperf_name = "stable-diffusion-xl"
    checker_names = {"99": "stable-diffusion-xl"}
    default_accuracy_target = "99"
    dataset_size = 5000
    performance_sample_count = 5000
    payload_dtype = "uint8"
    payload_size = None           # H*W*3, from the checkpoint (1024x1024 for SDXL base); checked in score()
    default_batch_size = 1        # the reference SUT's default
    synthetic_n = 12
    # image_side=1024: the real image (and log) size, for a rehearsal of a full run (synthetic.py)
    synthetic_options = {"image_side": 32}
    options = {"guidance_scale": 8.0, "num_inference_steps": 20}

    # --- data -----------------------------------------------------------------
    def open_dataset(self, path: Path, model_path: Path | None = None, options: dict | None = None) -> CocoCaptions:
        return CocoCaptions(Path(path), self.accuracy_model_path(path, model_path))

    def fingerprint(self, dataset_path: Path, model_path: Path) -> dict:
        for rel in (CAPTIONS, LATENTS):
            f = Path(dataset_path) / rel
            if not f.is_file():
                raise KitError(f"{f} not found; the SDXL dataset dir must hold {CAPTIONS} and {LATENTS}.")
        return {}  # captions, latents and the checkpoint: by content, in the core

    def write_extras(self, run_dir: Path, merged_log: Path, dataset_path: Path, model_path: Path) -> list[str]:
        """The checker's images/<id>.png + captions.txt for the sample ids this run covers."""
        from evalkit.accuracy_log import decode_payloads

        from .images import save_sample_images

        pairs = ((q, np.frombuffer(p, np.uint8)) for q, p in decode_payloads(merged_log))
        done = save_sample_images(pairs, read_captions(Path(dataset_path)), Path(run_dir) / "images",
                                  self.image_shape(Path(model_path)))
        return [f"images/{q}.png" for q in done]

    def image_shape(self, model_path: Path | None) -> tuple[int, int]:
        """(H, W) of the images the checkpoint makes: unet sample_size x the VAE's upscale."""
        if model_path is None:
            return REFERENCE_SIDE, REFERENCE_SIDE
        try:
            pipe_dir, _ = pipeline_dirs(model_path)
            unet = json.loads((pipe_dir / "unet" / "config.json").read_text())
            vae = json.loads((pipe_dir / "vae" / "config.json").read_text())
            s = unet["sample_size"]
            s = (s, s) if isinstance(s, int) else tuple(s)
            f = 2 ** (len(vae["block_out_channels"]) - 1)
            return int(s[0]) * f, int(s[1]) * f
        except (KitError, OSError, ValueError, KeyError, TypeError):
            return REFERENCE_SIDE, REFERENCE_SIDE  # the reference accuracy script's fixed 1024x1024

    # --- model ----------------------------------------------------------------
    def load_model(self, model_path: Path, device: str, data_type: str, options: dict) -> _SDXL:
        import torch
        from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.disable_progress_bar()  # "Loading pipeline components" would break the kit's lines
        dtype = self.torch_dtype(data_type)
        pipe_dir, sched_dir = pipeline_dirs(model_path)
        try:
            scheduler = EulerDiscreteScheduler.from_pretrained(sched_dir, subfolder="scheduler")
            pipe = StableDiffusionXLPipeline.from_pretrained(pipe_dir, scheduler=scheduler, add_watermarker=False,
                                                             dtype=dtype)
        except (OSError, ValueError, TypeError, KeyError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise KitError(f"cannot load the SDXL pipeline from {pipe_dir} ({first}); it must be a diffusers "
                           f"StableDiffusionXLPipeline dir.") from None
        pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        neg = [NEGATIVE_PROMPT]
        ids = torch.from_numpy(tokenize(pipe.tokenizer, neg)).to(device)
        ids_2 = torch.from_numpy(tokenize(pipe.tokenizer_2, neg)).to(device)
        return _SDXL(pipe, ids, ids_2, dict(self.options, **options))

    def make_batch(self, samples: Sequence[Any], device: str, data_type: str, options: dict) -> dict:
        import torch

        return {"ids": torch.from_numpy(np.stack([s["ids"] for s in samples])).to(device),
                "ids_2": torch.from_numpy(np.stack([s["ids_2"] for s in samples])).to(device),
                "latents": torch.from_numpy(np.concatenate([s["latents"] for s in samples])).to(
                    device=device, dtype=self.torch_dtype(data_type))}

    def compile_model(self, model: _SDXL, compile_fn) -> _SDXL:
        import copy

        out = copy.copy(model)
        out.pipe = copy.copy(model.pipe)
        out.pipe.unet = compile_fn(model.pipe.unet)  # the UNet is where the time goes
        return out

    def forward(self, model: _SDXL, inputs: dict):
        import torch

        pipe, n = model.pipe, inputs["ids"].shape[0]
        with torch.inference_mode():
            pe, pooled = _encode(pipe, inputs["ids"], inputs["ids_2"])
            ne, npooled = _encode(pipe, model.neg_ids.expand(n, -1), model.neg_ids_2.expand(n, -1))
            return pipe(prompt_embeds=pe, negative_prompt_embeds=ne, pooled_prompt_embeds=pooled,
                        negative_pooled_prompt_embeds=npooled,
                        guidance_scale=float(model.options["guidance_scale"]),
                        num_inference_steps=int(model.options["num_inference_steps"]),
                        output_type="pt", latents=inputs["latents"]).images

    def postprocess(self, outputs: Any, n: int) -> list[np.ndarray]:
        # PostProcessCoco: (t.permute(1, 2, 0).float() * 255).round().astype(uint8)
        return [np.ascontiguousarray((t.cpu().permute(1, 2, 0).float().numpy() * 255).round().astype(np.uint8))
                for t in outputs[:n]]

    # --- accuracy -------------------------------------------------------------
    def score(self, pairs: Iterable[tuple[int, np.ndarray]], dataset_path: Path, n_count: int,
              model_path: Path | None = None) -> dict:
        import torch

        from .clip_score import ClipScorer
        from .fid import INCEPTION_FILE, RunningStats, frechet_distance, load_inception, read_statistics

        ds = Path(dataset_path)
        captions = read_captions(ds)
        if n_count > len(captions):
            raise KitError(f"{ds / CAPTIONS} has {len(captions)} captions, the run evaluated {n_count} samples.")
        h, w = self.image_shape(model_path)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        mu_ref, sigma_ref = read_statistics(ds / STATISTICS)
        clip = ClipScorer(ds / CLIP_DIR, device)
        inception = load_inception(ds / INCEPTION / INCEPTION_FILE, device).double()  # see fid.py: reproducible FID
        stats = RunningStats(inception.dims)
        clip_sum, count = 0.0, 0
        batch: list[tuple[int, np.ndarray]] = []

        def flush():
            nonlocal clip_sum, count
            if not batch:
                return
            from .fid import image_batch

            images = [img for _, img in batch]
            clip_sum += float(clip.scores(images, [captions[q] for q, _ in batch]).sum())
            for k in range(0, len(images), INCEPTION_BATCH):
                with torch.inference_mode():
                    acts = inception(image_batch(images[k:k + INCEPTION_BATCH], device, torch.float64))
                stats.update(acts.cpu().numpy())
            count += len(batch)
            batch.clear()

        for q, payload in pairs:
            if payload.size != h * w * 3:
                raise KitError(f"the response for qsl_idx {q} holds {payload.size} bytes, an image of this "
                               f"checkpoint is {h}x{w}x3 = {h * w * 3}; check the payload and the checkpoint.")
            batch.append((q, payload.reshape(h, w, 3)))
            if len(batch) == SCORE_BATCH:
                flush()
        flush()
        clip = inception = None  # free both networks before sqrtm's 2048x2048 work: a lower peak
        fid = frechet_distance(mu_ref, sigma_ref, stats.mean, stats.cov())
        return {"CLIP_SCORE": clip_sum / count, "FID_SCORE": fid, "images": count}

    def accuracy_lines(self, metrics: dict) -> list[str]:
        # accuracy_coco.py at HEAD prints the values as strings (the checker regexes allow the quote).
        return ["Accuracy Results: {'FID_SCORE': '%r', 'CLIP_SCORE': '%r'}"
                % (float(metrics["FID_SCORE"]), float(metrics["CLIP_SCORE"]))]

    # --- synthetic ------------------------------------------------------------
    def synthesize(self, out: Path, n: int, seed: int, **options) -> list[np.ndarray]:
        from .synthetic import synthesize

        return synthesize(self, Path(out), n, seed, **options)

    def synthetic_reference(self) -> dict[str, float]:
        from .synthetic import CLIP_PERFECT

        return {"CLIP_SCORE": CLIP_PERFECT}


BENCHMARK = StableDiffusionXL()
