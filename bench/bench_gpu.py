"""Accelerator benchmarks, one section (one function) per issue; each runs on CPU with small
sizes too (--small, the default without CUDA).

ResNet50 section (issue 12, `resnet_section`): samples/s of the model alone with inputs already on
the device (eager, torch.compile), of a bare loop over the kit's make_batch/forward/postprocess,
and of the kit under LoadGen Offline PerformanceOnly (pytorch and pytorch-compile backends), with
the ratio kit / compiled ideal. bf16 and the model's GPU batch size on CUDA; fp32, batch 16 on CPU.
Goals (issue 12): kit >= 20,000 samples/s and >= 0.85 of the compiled ideal on one H100/H200.

GPT-J section (issue 13, `gptj_section`): GPT-J 6B dimensions (28 layers, d_model 4096, 16 heads,
rotary 64, vocab 50400), random weights, bf16; prompts of random ids, 700-1000 tokens; the
reference generation settings (beam 4, 30-128 new tokens, early stopping). Random weights
practically never emit eos, so every prompt runs to 128 new tokens (real answers are shorter).
  * decode step: the kit's GPTJDecoder, 32 prompts x 4 beams = 128 sequences over 1000 cached
    prompt tokens, median ms of the steps after the first two;
  * per sample: HF generate one prompt at a time (the reference SUT), seconds per sample;
  * batched: the kit's generate() over --n_batched prompts, token budget from free memory;
  * projected hours for the 13,368 samples at each rate.
Goals (issue 13): decode step <= 35 ms, full set <= 60 minutes on one H100/H200.

    .venv/bin/python bench/bench_gpu.py [--section resnet|gptj|all] [--device cuda] [--small] [--n_batched 64]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GPTJ_SAMPLES = 13368


def _sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _gptj_model(device, dtype, layers, d_model, heads, seed=0):
    import torch
    from transformers import GPTJConfig, GPTJForCausalLM

    cfg = GPTJConfig(vocab_size=50400, n_positions=2048, n_embd=d_model, n_layer=layers, n_head=heads,
                     rotary_dim=64, bos_token_id=50256, eos_token_id=50256)
    torch.manual_seed(seed)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build in place on the device, in the run dtype (6B: no fp32 copy)
    try:
        with torch.device(device):
            model = GPTJForCausalLM(cfg)
    finally:
        torch.set_default_dtype(old)
    return model.to(device=device, dtype=dtype).eval()


def gptj_section(device: str = "cuda", small: bool = False, n_batched: int = 64, n_per_sample: int = 3,
                 out=print) -> dict:
    """Decode-step ms (128 sequences x 1000 tokens), per-sample vs batched s/sample, projected hours."""
    import numpy as np
    import torch

    from language.generate import GPTJDecoder, generate
    from language.gptj.benchmark import GEN_DEFAULTS

    if small:  # CPU-sized: same code paths, small numbers
        dims, dtype, n_prompts, plen, lo_hi, gen_new = (2, 256, 4), torch.float32, 8, 200, (120, 200), 16
        n_batched, n_per_sample = min(n_batched, 8), min(n_per_sample, 2)
    else:
        dims, dtype, n_prompts, plen, lo_hi, gen_new = (28, 4096, 16), torch.bfloat16, 32, 1000, (700, 1000), 128
    nb = GEN_DEFAULTS["num_beams"]
    t0 = time.perf_counter()
    model = _gptj_model(device, dtype, *dims)
    out(f"GPT-J section: {dims[0]} layers, d_model {dims[1]}, {dims[2]} heads, vocab 50400, random weights, "
        f"{str(dtype).replace('torch.', '')}, {device} "
        f"({torch.cuda.get_device_name(device) if torch.device(device).type == 'cuda' else 'CPU'}); "
        f"model built in {time.perf_counter() - t0:.1f} s")
    rng = np.random.default_rng(0)
    res: dict = {}
    with torch.inference_mode():
        # 1. one decode step, n_prompts x beams sequences over plen cached prompt tokens
        dec = GPTJDecoder(model)
        ps = [rng.integers(0, 50000, plen).tolist() for _ in range(n_prompts)]
        _sync(device)
        t0 = time.perf_counter()
        dec.start(ps, nb, gen_new)
        _sync(device)
        res["prefill_s_per_prompt"] = (time.perf_counter() - t0) / n_prompts
        tok = torch.as_tensor(rng.integers(0, 50000, n_prompts * nb), device=device)
        times = []
        for t in range(min(12, gen_new)):
            _sync(device)
            t0 = time.perf_counter()
            dec.step(tok, t)
            _sync(device)
            times.append(time.perf_counter() - t0)
        res["decode_step_ms"] = 1e3 * statistics.median(times[2:] or times)
        del dec
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        gen = dict(GEN_DEFAULTS, max_new_tokens=gen_new, min_new_tokens=min(GEN_DEFAULTS["min_new_tokens"], gen_new))
        eos = 50256
        # 2. per sample: HF generate, batch 1 (the reference SUT)
        prompts = [rng.integers(0, 50000, int(rng.integers(*lo_hi))).tolist() for _ in range(max(n_batched, n_per_sample))]
        generate(model, prompts[:1], **dict(gen, max_new_tokens=2), eos_token_id=eos)  # warm-up
        t0 = time.perf_counter()
        for p in prompts[:n_per_sample]:
            model.generate(input_ids=torch.tensor([p], device=device), attention_mask=torch.ones((1, len(p)), dtype=torch.long, device=device),
                           **gen, do_sample=False, eos_token_id=eos, pad_token_id=eos)
        _sync(device)
        res["per_sample_s"] = (time.perf_counter() - t0) / n_per_sample
        # 3. batched: the kit's generate, token budget from free device memory
        lines: list[str] = []
        t0 = time.perf_counter()
        outs = generate(model, prompts[:n_batched], **gen, eos_token_id=eos, pad_token_id=eos, log=lines.append)
        _sync(device)
        res["batched_s"] = (time.perf_counter() - t0) / n_batched
        res["batched_new_tokens"] = int(np.mean([len(o) for o in outs]))
        if torch.device(device).type == "cuda":
            res["batched_peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        for line in lines:
            out(line)
    h = GPTJ_SAMPLES / 3600
    out(f"| measure | value |")
    out(f"|---|---|")
    out(f"| decode step, {n_prompts * nb} sequences x {plen} prompt tokens | {res['decode_step_ms']:.1f} ms (goal <= 35 at full size) |")
    out(f"| prefill, {plen} tokens | {res['prefill_s_per_prompt'] * 1e3:.0f} ms per prompt (once for its {nb} beams) |")
    out(f"| HF generate per sample (reference SUT), {n_per_sample} prompts | {res['per_sample_s']:.3f} s/sample, "
        f"{res['per_sample_s'] * h:.2f} h for {GPTJ_SAMPLES} |")
    peak = f", peak {res['batched_peak_gib']:.0f} GiB" if "batched_peak_gib" in res else ""
    out(f"| kit generate batched, {n_batched} prompts ({res['batched_new_tokens']} new tokens each{peak}) | "
        f"{res['batched_s']:.3f} s/sample, {res['batched_s'] * h:.2f} h for {GPTJ_SAMPLES} "
        f"({res['per_sample_s'] / res['batched_s']:.1f}x) |")
    return res


def _resnet_set(root: Path, n: int, seed: int = 0) -> tuple[Path, Path]:
    """n random JPEGs in the ImageNet layout + a random-weight resnet50.pth: performance runs need
    no calibrated labels, so this takes seconds (the synthetic accuracy set takes minutes)."""
    import numpy as np
    import torch
    from PIL import Image

    from vision.resnet50.model import resnet50

    ds, mp = root / "dataset", root / "model"
    ds.mkdir(parents=True)
    mp.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        name = f"ILSVRC2012_val_{i + 1:08d}.JPEG"
        Image.fromarray(rng.integers(0, 256, (256, 320, 3), dtype=np.uint8)).save(ds / name, quality=90)
        lines.append(f"{name} {i % 1000}\n")
    (ds / "val_map.txt").write_text("".join(lines))
    torch.manual_seed(seed)
    torch.save(resnet50().state_dict(), mp / "resnet50.pth")
    return ds, mp


def _rate(fn, n: int, device, repeats: int = 3) -> float:
    fn()  # warm-up (and compilation)
    best = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best.append(n / (time.perf_counter() - t0))
    return statistics.median(best)


def resnet_section(device: str = "cuda", small: bool = False, batch: int | None = None, out=print) -> dict:
    """ResNet50 samples/s: model only (eager, compiled) with inputs already on the device, the bare
    loop over the kit's make_batch/forward/postprocess, and the kit under LoadGen Offline
    (PerformanceOnly), eager and pytorch-compile; the kit / compiled-ideal ratio."""
    import tempfile

    import torch

    from evalkit import registry
    from evalkit.plan import RunSpec, resolve
    from evalkit.runner import run_partition

    bench = registry.get("resnet")
    cuda = torch.device(device).type == "cuda"
    data_type = "bf16" if cuda else "fp32"
    batch = batch or (bench.cuda_batch_size if cuda else 16)
    n_img = 256 if cuda else 32
    n_iter = batch * (16 if cuda else 2)
    res: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ds_path, mp = _resnet_set(tmp / "set", n_img)
        opts = {"channels_last": True}
        model = bench.load_model(mp, device, data_type, opts)
        ds = bench.open_dataset(ds_path)
        crops = [ds.load(i) for i in range(n_img)]
        idx = [i % n_img for i in range(batch)]
        with torch.inference_mode():
            x = bench.make_batch([crops[i] for i in idx], device, data_type, opts)
            res["eager ideal"] = _rate(lambda: [model(x) for _ in range(n_iter // batch)], n_iter, device)
            compiled = torch.compile(model)
            res["compiled ideal"] = _rate(lambda: [compiled(x) for _ in range(n_iter // batch)], n_iter, device)

            def bare():
                for k in range(n_iter // batch):
                    b = [crops[(k * batch + j) % n_img] for j in range(batch)]
                    bench.postprocess(bench.forward(model, bench.make_batch(b, device, data_type, opts)), batch)
            res["bare loop (make_batch/forward/postprocess)"] = _rate(bare, n_iter, device)
        model = compiled = None  # free the device before the kit loads its own copy
        for backend, label in (("pytorch", "kit, LoadGen Offline"), ("pytorch-compile", "kit, LoadGen Offline, pytorch-compile")):
            spec = RunSpec(model="resnet", dataset=ds_path, model_path=mp, log_path=tmp / backend, mode="performance",
                           data_type=data_type, device=device, batch_size=batch, backend=backend,
                           threads=torch.get_num_threads(),
                           perf={"target_qps": 1, "min_duration": 4000 if cuda else 1000,
                                 "min_query_count": n_iter * (8 if cuda else 1)})
            run_partition(resolve(spec), 0)
            summary = (tmp / backend / "0" / "mlperf_log_summary.txt").read_text()
            import re
            res[label] = float(re.search(r"Samples per second\s*:\s*([\d.]+)", summary).group(1))
    name = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} threads"
    out(f"ResNet50 section: {data_type}, batch {batch}, random weights, {device} ({name})")
    out("| path | samples/s |")
    out("|---|---|")
    for k, v in res.items():
        out(f"| {k} | {v:,.1f} |")
    ideal = res["compiled ideal"]
    out(f"| ratio kit / compiled ideal | {res['kit, LoadGen Offline'] / ideal:.3f} (eager), "
        f"{res['kit, LoadGen Offline, pytorch-compile'] / ideal:.3f} (compiled); goal >= 0.85 on a GPU |")
    return res


SECTIONS = {"gptj": gptj_section, "resnet": resnet_section}


def main() -> None:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--section", choices=sorted(SECTIONS) + ["all"], default="all")
    ap.add_argument("--batch", type=int, help="resnet: batch size (default: the model's for the device)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--small", action="store_true", help="CPU-sized model and batches (default without CUDA)")
    ap.add_argument("--n_batched", type=int, default=64)
    ap.add_argument("--n_per_sample", type=int, default=3)
    a = ap.parse_args()
    small = a.small or torch.device(a.device).type != "cuda"
    if a.section in ("resnet", "all"):
        resnet_section(a.device, small, a.batch)
    if a.section in ("gptj", "all"):
        gptj_section(a.device, small, a.n_batched, a.n_per_sample)


if __name__ == "__main__":
    main()
