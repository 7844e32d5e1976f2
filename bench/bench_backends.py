"""Backends compared on this machine: prints one table.

  python bench/bench_backends.py [--out DIR] [--n_resnet 16] [--n_gptj 6] [--threads 2]

1. ResNet50 (synthetic set, random weights): pytorch vs pytorch-compile samples/s on the same
   batches; compile time = first compiled batch - one eager batch.
2. Synthetic GPT-J (tiny, CPU-sized; greedy, 32 new tokens so compile finishes): same comparison.
3. The same GPT-J through `transformers serve` (BACKEND=openai, one request at a time) vs in
   process pytorch at batch 1, reference beam 4, one thread each: overhead per sample.
Steady-state rates are over a second pass (the first pass of pytorch-compile includes compiling).
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["HF_HUB_OFFLINE"] = "1"

from evalkit import backends, registry  # noqa: E402


def synth(model: str, out: Path, n: int) -> Path:
    if not (out / "dataset").is_dir():
        subprocess.run([sys.executable, "-m", "evalkit", "synth", model, "--out", str(out), "--n", str(n)],
                       cwd=ROOT, check=True, capture_output=True)
    return out


def timed_pass(b, bench, batches, options) -> float:
    t = time.perf_counter()
    for batch in batches:
        bench.postprocess(b.run(bench.make_batch(batch, "cpu", "fp32", options)), len(batch))
    return time.perf_counter() - t


def compare_compile(model: str, data: Path, n: int, bs: int, options: dict, backend_options: dict) -> list[tuple]:
    bench = registry.get(model)
    ds = bench.open_dataset(data / "dataset", data / "model")
    samples = [ds.load(i) for i in range(n)]
    batches = [samples[i:i + bs] for i in range(0, n, bs)]
    rows, first = [], {}
    for name, opts in (("pytorch", {}), ("pytorch-compile", backend_options)):
        b = backends.create(name, opts)
        b.load(bench, data / "model", "cpu", "fp32", options)
        t0 = time.perf_counter()
        bench.postprocess(b.run(bench.make_batch(batches[0], "cpu", "fp32", options)), len(batches[0]))
        first[name] = time.perf_counter() - t0
        timed_pass(b, bench, batches, options)  # warm every shape (a shorter last batch recompiles)
        steady = timed_pass(b, bench, batches, options)
        info = b.describe()
        b.close()
        rows.append((model, name, n / steady, info.get("compiled", "-")))
    # a compile that fell back ran eager: no ratio or compile time to report
    ratio = f"{rows[1][2] / rows[0][2]:.2f}x" if rows[1][3] is True else "n/a"
    compile_s = f"{first['pytorch-compile'] - first['pytorch']:.1f}" if rows[1][3] is True else "n/a"
    return [r + ((ratio, compile_s) if r[1] == "pytorch-compile" else ("1.00x", "-")) for r in rows]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def compare_openai(data: Path, n: int) -> list[tuple]:
    bench = registry.get("gpt-j")
    ds = bench.open_dataset(data / "dataset", data / "model")
    prompts = [[ds.load(i)] for i in range(n)]
    serve = shutil.which("transformers", path=str(Path(sys.executable).parent))
    port = free_port()
    import torch

    # same thread count on both sides: on a busy machine oversubscription, not HTTP, would dominate
    torch.set_num_threads(1)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([serve, "serve", str(data / "model"), "--host", "127.0.0.1", "--port", str(port),
                             "--device", "cpu", "--dtype", "float32"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(180):
            try:
                urllib.request.urlopen(url + "/health", timeout=2).close()
                break
            except OSError:
                time.sleep(1)
        rows = []
        for name, opts in (("pytorch", {}), ("openai", {"server_url": url, "server_api": "transformers",
                                                         "concurrency": 1})):
            b = backends.create(name, opts)
            b.load(bench, data / "model", "cpu", "fp32", {})
            timed_pass(b, bench, prompts[:1], {})  # warm-up (server: loads nothing more, pinned model)
            dt = timed_pass(b, bench, prompts, {})
            b.close()
            rows.append(("gpt-j beam4", name, n / dt, dt / n * 1000))
        return rows
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, help="where the synthetic sets are made (default: a temp dir)")
    ap.add_argument("--n_resnet", type=int, default=16)
    ap.add_argument("--n_gptj", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2, help="torch threads for the compile comparison")
    ap.add_argument("--skip_compile", action="store_true", help="only the openai comparison")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    out = a.out or Path(tempfile.mkdtemp(prefix="bench_backends_"))
    rn = synth("resnet", out / "resnet", a.n_resnet)
    gj = synth("gpt-j", out / "gpt-j", a.n_gptj)
    if not a.skip_compile:
        rows = compare_compile("resnet", rn, a.n_resnet, 8, {"channels_last": True}, {})
        rows += compare_compile("gpt-j", gj, a.n_gptj, a.n_gptj, {"num_beams": 1, "min_new_tokens": 0,
                                                                  "max_new_tokens": 32}, {"dynamic": True})
        print(f"torch {torch.__version__}, {a.threads} threads, {os.cpu_count()} cores\n")
        print(f"{'model':<12} {'backend':<16} {'samples/s':>10} {'vs eager':>9} {'compile s':>10} {'compiled':>9}")
        for model, name, rate, compiled, ratio, comp in rows:
            print(f"{model:<12} {name:<16} {rate:>10.2f} {ratio:>9} {comp:>10} {str(compiled):>9}")
        print()
    oa = compare_openai(gj, a.n_gptj)
    print(f"{'model':<12} {'backend':<16} {'samples/s':>10} {'ms/sample':>10}")
    for model, name, rate, ms in oa:
        print(f"{model:<12} {name:<16} {rate:>10.2f} {ms:>10.1f}")
    print(f"openai overhead per sample: {oa[1][3] - oa[0][3]:+.1f} ms "
          f"(HTTP + JSON + server-side tokenising + re-tokenising the text; one request at a time)")


if __name__ == "__main__":
    main()
