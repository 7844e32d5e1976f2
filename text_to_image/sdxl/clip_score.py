"""CLIP score as the reference `tools/clip/clip_encoder.py` computes it, with transformers.

The reference uses open_clip ViT-B/32 ("openai" weights); the same weights exist as a
transformers CLIPModel dir (openai/clip-vit-base-patch32), which the kit reads from its
data dir. Per image: 100 * cos(image embedding, caption embedding), then the mean.

Preprocessing follows open_clip's transform for these weights without torchvision:
PIL bicubic resize of the short side to 224, centre crop 224, /255, OpenAI mean/std.
Text: open_clip cleans with html.unescape (twice) and strip before lower-casing BPE;
the HF tokenizer lower-cases and collapses whitespace; 77 tokens with the end token
kept last on truncation (both). Embeddings pool at the end token, as open_clip does.
"""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from evalkit.errors import KitError

CLIP_SIZE = 224
OPENAI_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
OPENAI_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def preprocess(img: np.ndarray) -> np.ndarray:
    """uint8 HWC RGB -> float32 CHW (3, 224, 224), normalised."""
    from PIL import Image

    h, w = img.shape[:2]
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(CLIP_SIZE * long / short)  # torchvision Resize(int): short side -> 224
    size = (CLIP_SIZE, new_long) if w <= h else (new_long, CLIP_SIZE)  # PIL wants (width, height)
    im = Image.fromarray(np.ascontiguousarray(img), "RGB")
    if im.size != size:
        im = im.resize(size, Image.BICUBIC)
    top = int(round((im.size[1] - CLIP_SIZE) / 2.0))
    left = int(round((im.size[0] - CLIP_SIZE) / 2.0))
    im = im.crop((left, top, left + CLIP_SIZE, top + CLIP_SIZE))
    x = np.asarray(im, dtype=np.float32) / 255.0
    return ((x - OPENAI_MEAN) / OPENAI_STD).transpose(2, 0, 1)


def clean_caption(text: str) -> str:
    return html.unescape(html.unescape(text)).strip()


class ClipScorer:
    def __init__(self, model_dir: Path, device: str = "cpu"):
        import torch
        from transformers import CLIPModel, CLIPTokenizer

        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise KitError(f"CLIP model dir {model_dir} has no config.json; put the ViT-B/32 CLIPModel "
                           f"(openai/clip-vit-base-patch32, transformers format) there; the kit never downloads it.")
        try:
            self.tok = CLIPTokenizer.from_pretrained(model_dir)
            self.model = CLIPModel.from_pretrained(model_dir, dtype=torch.float32).eval().to(device)
        except Exception as e:  # noqa: BLE001 - the Rust tokenizers raise bare Exception for a bad file
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise KitError(f"cannot load the CLIP model from {model_dir} ({first}); it must be a transformers "
                           f"CLIPModel dir with its tokenizer.") from None
        self.device = device
        self.max_len = int(self.model.config.text_config.max_position_embeddings)

    def scores(self, images: list[np.ndarray], captions: list[str]) -> np.ndarray:
        """100 * cosine similarity of each image with its caption (float64, one per image)."""
        import torch

        m = self.model
        ids = self.tok([clean_caption(c) for c in captions], padding="max_length", truncation=True,
                       max_length=self.max_len, return_tensors="pt").input_ids.to(self.device)
        pix = torch.from_numpy(np.stack([preprocess(im) for im in images])).to(self.device)
        with torch.inference_mode():
            img = m.visual_projection(m.vision_model(pixel_values=pix).pooler_output).double()
            txt = m.text_projection(m.text_model(input_ids=ids).pooler_output).double()
        img = img / img.norm(dim=-1, keepdim=True)
        txt = txt / txt.norm(dim=-1, keepdim=True)
        return (100.0 * (img * txt).sum(-1)).cpu().numpy()
