"""Stable Diffusion XL: the model-specific parts (the contract test covers the run itself).

FID Inception layout and loading, streaming FID statistics, the Frechet distance, CLIP
preprocessing, the locally built CLIP tokenizers, the scorer's memory bound on a log of
large images, the submitter's sample images, and batched generation equal to the batch-1
ground truth byte for byte.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from evalkit.errors import KitError
from text_to_image.sdxl import fid, synthetic
from text_to_image.sdxl.benchmark import (BENCHMARK, CAPTION_COLUMNS, CAPTIONS, CLIP_DIR, INCEPTION, STATISTICS,
                                          pipeline_dirs)
from text_to_image.sdxl.clip_score import CLIP_SIZE, preprocess
from text_to_image.sdxl.images import save_sample_images

from conftest import ROOT, kit_env

torch = pytest.importorskip("torch")


def test_fid_inception_has_the_published_layout(tmp_path):
    full = fid.build_inception(1)
    assert full.dims == 2048 and tuple(full.fc.weight.shape) == (1008, 2048)
    keys = set(full.state_dict())
    assert {"Conv2d_1a_3x3.conv.weight", "Mixed_5b.branch_pool.conv.weight", "Mixed_6e.branch7x7dbl_5.bn.running_var",
            "Mixed_7c.branch3x3dbl_3b.conv.weight"} <= keys
    assert not any(k.startswith("AuxLogits") for k in keys)  # the FID net is built with aux_logits=False
    # A narrow net in the same format (no num_batches_tracked, as the published file) loads by its widths.
    tiny = fid.build_inception(synthetic.INCEPTION_DIV)
    f = tmp_path / fid.INCEPTION_FILE
    torch.save({k: v for k, v in tiny.state_dict().items() if not k.endswith("num_batches_tracked")}, f)
    net = fid.load_inception(f)
    assert net.dims == tiny.dims == 6
    with torch.no_grad():
        out = net(torch.rand(2, 3, 40, 56))
    assert tuple(out.shape) == (2, 6)


def test_fid_inception_rejects_other_files(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(KitError, match="cannot load FID Inception"):
        fid.load_inception(bad)
    torch.save({"fc.weight": torch.zeros(3, 3)}, bad)
    with pytest.raises(KitError, match="not an FID Inception"):
        fid.load_inception(bad)
    state = fid.build_inception(256).state_dict()
    state["Mixed_5b.branch1x1.conv.weight"] = torch.zeros(3, 1, 1, 1)
    torch.save(state, bad)
    with pytest.raises(KitError, match="does not match"):
        fid.load_inception(bad)
    with pytest.raises(KitError, match="not found"):
        fid.load_inception(tmp_path / "missing.pth")


def test_running_stats_equal_numpy_mean_and_cov():
    rng = np.random.default_rng(0)
    acts = rng.normal(3.0, 2.0, (41, 7))
    s = fid.RunningStats(7)
    start = 0
    for k in (1, 16, 3, 21):  # uneven batches, as the last batch of a log is
        s.update(acts[start:start + k])
        start += k
    assert s.n == 41
    np.testing.assert_allclose(s.mean, acts.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(s.cov(), np.cov(acts, rowvar=False), rtol=1e-10)


def test_frechet_distance_closed_form():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    a, b = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)
    want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)  # diagonal covariances
    assert fid.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(want, rel=1e-9)
    with pytest.raises(KitError, match="do not belong together"):
        fid.frechet_distance(mu1, np.diag(a), mu2[:4], np.diag(b[:4]))


def test_clip_preprocess_follows_open_clip():
    from PIL import Image

    rng = np.random.default_rng(2)
    tall = rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)
    x = preprocess(tall)
    assert x.shape == (3, CLIP_SIZE, CLIP_SIZE) and x.dtype == np.float32
    # short side -> 224 (bicubic), then the centre crop of the long side
    im = Image.fromarray(tall).resize((224, 336), Image.BICUBIC).crop((0, 56, 224, 280))
    manual = (np.asarray(im, np.float32) / 255 - [0.48145466, 0.4578275, 0.40821073]) \
        / [0.26862954, 0.26130258, 0.27577711]
    np.testing.assert_allclose(x, manual.transpose(2, 0, 1), rtol=1e-5, atol=1e-5)


def test_tokenizers_are_built_locally(tmp_path):
    from transformers import CLIPTokenizer

    merges = synthetic._learn_merges("the cat sat on the table the end".split(), 10)
    synthetic.write_tokenizer(tmp_path / "t1", merges, pad="<|endoftext|>")
    size = synthetic.write_tokenizer(tmp_path / "t2", merges, pad="!")
    t1, t2 = CLIPTokenizer.from_pretrained(tmp_path / "t1"), CLIPTokenizer.from_pretrained(tmp_path / "t2")
    assert len(t1) == size and t1.model_max_length == 77
    ids = t1("The  THE cat").input_ids
    assert ids[0] == size - 2 and ids[-1] == size - 1  # <|startoftext|> ... <|endoftext|>, the last ids
    assert ids[1] == ids[2] == t1.convert_tokens_to_ids("the</w>")  # lower-cased; a learned merge
    padded = t2(["a"], padding="max_length", max_length=77).input_ids[0]
    assert len(padded) == 77 and padded[-1] == 0  # SDXL's tokenizer_2 pads with '!' (id 0)


def test_pipeline_dirs_accept_both_layouts(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "model_index.json").write_text("{}")
    assert pipeline_dirs(tmp_path / "a") == (tmp_path / "a", tmp_path / "a")
    ref = tmp_path / "ref"
    (ref / "checkpoint_pipe").mkdir(parents=True)
    (ref / "checkpoint_pipe" / "model_index.json").write_text("{}")
    (ref / "checkpoint_scheduler" / "scheduler").mkdir(parents=True)
    assert pipeline_dirs(ref) == (ref / "checkpoint_pipe", ref / "checkpoint_scheduler")
    with pytest.raises(KitError, match="not a diffusers SDXL checkpoint"):
        pipeline_dirs(tmp_path)


def test_accuracy_line_is_the_reference_print():
    line, = BENCHMARK.accuracy_lines({"CLIP_SCORE": 31.75, "FID_SCORE": 23.5})
    assert line == "Accuracy Results: {'FID_SCORE': '23.5', 'CLIP_SCORE': '31.75'}"


def test_sample_images_for_the_checker(tmp_path):
    captions = [f"caption {i}" for i in range(100)]
    img = lambda v: np.full((4, 6, 3), v, np.uint8).reshape(-1)  # noqa: E731
    pairs = [(0, img(1)), (52, img(2)), (95, img(3)), (52, img(9))]  # 52 and 95: v6.0 / v4.0 ids
    done = save_sample_images(iter(pairs), captions, tmp_path / "images", (4, 6))
    assert done == [52, 95]
    from PIL import Image

    assert np.asarray(Image.open(tmp_path / "images" / "52.png")).max() == 2  # first occurrence
    assert (tmp_path / "images" / "captions.txt").read_text() == "52  caption 52\n95  caption 95\n"


# The reference's text_to_image/tools/sample_ids.txt since "Add constants for v6.1" (mlcommons/inference
# #2610, commit 4b790a61): the ten ids accuracy_coco.py dumps as compliance images for v6.1.
V6_1_IDS = (4475, 3627, 1046, 4937, 3867, 1671, 3789, 1206, 4111, 3093)


def test_v6_1_compliance_ids_are_saved(tmp_path):
    from text_to_image.sdxl import images

    assert images.SAMPLE_IDS["v6.1"] == V6_1_IDS and images.SOURCES["v6.1"]
    assert set(images.SAMPLE_IDS) == set(images.SOURCES), "every id list names where it comes from"
    assert set(V6_1_IDS) <= set(images.required_ids())
    captions = [f"caption {i}" for i in range(5000)]
    img = lambda v: np.full((2, 2, 3), v, np.uint8).reshape(-1)  # noqa: E731
    pairs = [(q, img(q % 251)) for q in range(5000)]
    done = save_sample_images(iter(pairs), captions, tmp_path / "images", (2, 2))
    assert set(V6_1_IDS) <= set(done) and done == images.required_ids()
    assert {int(p.stem) for p in (tmp_path / "images").glob("*.png")} == set(done)
    lines = (tmp_path / "images" / "captions.txt").read_text().splitlines()
    assert "4475  caption 4475" in lines and "3093  caption 3093" in lines
    # the reference's own file, spelled as it ships (ten lines, no newline after the last)
    ids_file = tmp_path / "sample_ids.txt"
    ids_file.write_text("\n".join(map(str, V6_1_IDS)))
    assert images.read_sample_ids(ids_file) == V6_1_IDS


def _scoring_set(root: Path, n: int, side: int) -> Path:
    """Dataset with captions + the tiny scoring networks, and a model dir whose configs say `side`."""
    from transformers import CLIPConfig, CLIPModel

    ds, model = root / "dataset", root / "model"
    (ds / CAPTIONS).parent.mkdir(parents=True)
    rows = ["\t".join(CAPTION_COLUMNS)] + [f"{i}\t{i}\tpicture number {i}\t{side}\t{side}\tf{i}.jpg\turl"
                                           for i in range(n)]
    (ds / CAPTIONS).write_text("\n".join(rows) + "\n")
    refs = [synthetic._reference_image(np.random.default_rng([0, k])) for k in range(16)]
    net = synthetic._write_inception(ds / INCEPTION / fid.INCEPTION_FILE, refs, 0)
    stats = fid.RunningStats(net.dims)
    with torch.no_grad():
        stats.update(net(fid.image_batch(refs, "cpu")).double().numpy())
    np.savez(ds / STATISTICS, mu=stats.mean, sigma=stats.cov())
    size = synthetic.write_tokenizer(ds / CLIP_DIR, [], pad="<|endoftext|>")
    cfg = CLIPConfig(text_config=synthetic._text_config(size, "quick_gelu").to_dict(),
                     vision_config=dict(image_size=224, patch_size=32, hidden_size=16, intermediate_size=32,
                                        num_hidden_layers=1, num_attention_heads=2), projection_dim=16)
    CLIPModel(cfg).save_pretrained(ds / CLIP_DIR)
    (model / "unet").mkdir(parents=True)
    (model / "vae").mkdir()
    (model / "model_index.json").write_text("{}")
    (model / "unet" / "config.json").write_text(json.dumps({"sample_size": side // 8}))
    (model / "vae" / "config.json").write_text(json.dumps({"block_out_channels": [1, 2, 3, 4]}))
    return root


def test_scorer_memory_stays_bounded_on_a_large_log(tmp_path):
    """Scoring 48 images takes no more Python/numpy memory at its peak than scoring 16: the
    merged log streams past the scorer (a full SDXL log is 31 GB; bench/bench_sdxl.py
    measures the real-size case)."""
    small, big, side = 16, 48, 256
    root = _scoring_set(tmp_path, big, side)
    script = textwrap.dedent(f"""
        import json, tracemalloc
        import numpy as np
        from pathlib import Path
        from evalkit.accuracy_log import Writer
        from evalkit.scoring import score_log
        from text_to_image.sdxl.benchmark import BENCHMARK
        # imports are not the log: load them before measuring
        import torch, scipy.linalg, PIL.Image
        from transformers import CLIPModel, CLIPTokenizer
        import text_to_image.sdxl.clip_score, text_to_image.sdxl.fid
        root = Path({str(root)!r})
        out = {{}}
        tracemalloc.start()
        for n in ({small}, {big}):
            log = root / f"log{{n}}.json"
            with open(log, "w") as f:
                w = Writer(f)
                for i in range(n):
                    img = np.random.default_rng(i).integers(0, 256, ({side}, {side}, 3), dtype=np.uint8)
                    w.write({{"seq_id": i, "qsl_idx": i, "data": img.tobytes().hex().upper()}})
                w.close()
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            m = score_log(BENCHMARK, log, root / "dataset", n, root / "model")
            out[n] = {{"peak": tracemalloc.get_traced_memory()[1] - base, "metrics": m}}
        print(json.dumps(out))
    """)
    cp = subprocess.run([sys.executable, "-c", script], env=kit_env(OMP_NUM_THREADS=1), cwd=ROOT, capture_output=True, text=True,
                        timeout=600)
    assert cp.returncode == 0, cp.stderr
    out = json.loads(cp.stdout.strip().splitlines()[-1])
    lo, hi = out[str(small)], out[str(big)]
    assert hi["metrics"]["images"] == big and np.isfinite(hi["metrics"]["FID_SCORE"])
    grown = (big - small) * side * side * 3  # payload bytes the bigger log adds
    assert hi["peak"] - lo["peak"] < 0.2 * grown, out


@pytest.fixture(scope="module")
def sdxl_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("sdxl_synth")
    return out, synthetic.synthesize(BENCHMARK, out, synthetic.MIN_N, 0)


def test_synthetic_images_have_the_recorded_size(sdxl_set):
    out, payloads = sdxl_set
    side = synthetic.IMAGE_SIDE
    assert BENCHMARK.image_shape(out / "model") == (side, side)
    assert all(p.shape == (side, side, 3) and p.dtype == np.uint8 for p in payloads)
    assert len({p.tobytes() for p in payloads}) == len(payloads)
    unet = json.loads((out / "model" / "unet" / "config.json").read_text())
    assert unet["addition_embed_type"] == "text_time" and unet["sample_size"] == synthetic.LATENT_SIDE
    for name in ("tokenizer", "tokenizer_2"):
        assert {"vocab.json", "merges.txt"} <= {f.name for f in (out / "model" / name).iterdir()}


def test_batched_generation_equals_the_batch1_truth(sdxl_set):
    out, payloads = sdxl_set
    ds = BENCHMARK.open_dataset(out / "dataset", out / "model")
    gen = BENCHMARK.load_model(out / "model", "cpu", "fp32", {})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        got = []
        for start in (0, 5):  # batches of 5 and 3
            batch = [ds.load(i) for i in range(start, min(start + 5, len(payloads)))]
            got += BENCHMARK.postprocess(BENCHMARK.forward(gen, BENCHMARK.make_batch(batch, "cpu", "fp32", {})),
                                         len(batch))
        bf16 = BENCHMARK.load_model(out / "model", "cpu", "bf16", {})
        low = BENCHMARK.postprocess(BENCHMARK.forward(bf16, BENCHMARK.make_batch([ds.load(0)], "cpu", "bf16", {})), 1)
    finally:
        torch.set_num_threads(threads)
    assert [g.tobytes() for g in got] == [p.tobytes() for p in payloads]
    assert low[0].shape == payloads[0].shape and low[0].dtype == np.uint8
