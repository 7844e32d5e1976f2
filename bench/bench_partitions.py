"""Cost of splitting a run: total CPU time of P partitions vs one, same samples.

Synthetic ResNet50 on CPU, `python -m evalkit run` as a user runs it (workers, LoadGen,
gather, check), each partition's worker on one thread so that thread-pool spinning
does not blur the comparison. CPU = user + sys of every process of the command
(RUSAGE_CHILDREN around it; the workers are waited for, so they count).
Goal: CPU(P) / CPU(1) <= 1.10. The per-partition fixed cost (interpreter, torch
import, model load, LoadGen setup) is what P multiplies, so the ratio falls as
n grows; the table prints that fixed cost too.

    .venv/bin/python bench/bench_partitions.py [--n 2048] [--images 64] [--partitions 8] [--batch 8] [--repeats 1]

Making thousands of distinct synthetic images takes long on a small CPU, so the
dataset is `--images` distinct synthetic JPEGs listed repeatedly in val_map.txt
(same labels): the compute per sample is unchanged, which is all CPU time sees.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def kit(*args) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    subprocess.run([sys.executable, "-m", "evalkit", *map(str, args)], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(synth: Path, log: Path, n: int, p: int, batch: int, concurrency: int) -> tuple[float, float]:
    """Run p partitions, `concurrency` workers at a time (manual offsets), then gather + check."""
    c0, t0 = cpu_children(), time.perf_counter()
    for offset in range(0, p, concurrency):
        kit("run", "resnet", "--dataset", synth / "dataset", "--model_path", synth / "model", "--log_path", log,
            "--n_count", n, "--n_partitions", p, "--partition_offset", offset,
            "--n_devices", min(concurrency, p - offset), "--threads", 1, "--batch_size", batch)
    return cpu_children() - c0, time.perf_counter() - t0


def repeated_set(synth: Path, out: Path, n: int) -> Path:
    """A dataset of n samples cycling over synth's images; checkpoint shared."""
    (out / "dataset").mkdir(parents=True)
    lines = (synth / "dataset" / "val_map.txt").read_text().split("\n")
    lines = [x for x in lines if x.strip()]
    for f in (synth / "dataset").iterdir():
        if f.suffix.upper() == ".JPEG":
            os.symlink(f, out / "dataset" / f.name)
    (out / "dataset" / "val_map.txt").write_text("\n".join(lines[i % len(lines)] for i in range(n)) + "\n")
    marker = json.loads((synth / "dataset" / "SYNTHETIC.json").read_text())
    marker["n"] = n
    (out / "dataset" / "SYNTHETIC.json").write_text(json.dumps(marker))
    os.symlink(synth / "model", out / "model")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--images", type=int, default=64, help="distinct synthetic images the n samples cycle over")
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=os.cpu_count() or 1,
                    help="workers at a time (default: one per core). More workers than cores adds "
                         "cache/scheduler contention to every sample, which is the machine, not partitioning")
    ap.add_argument("--synth", type=Path, help="existing synthetic set to cycle over (else one is made)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        synth = a.synth
        if synth is None:
            synth = tmp / "synth"
            kit("synth", "resnet", "--out", synth, "--n", a.images, "--seed", 0)
        synth = repeated_set(Path(synth), tmp / "repeated", a.n)
        # Interleaved 1, P, 1, P, ...: machine noise hits both alike.
        rows = {1: [], a.partitions: []}
        for rep in range(a.repeats):
            for p in (1, a.partitions):
                rows[p].append(measure(synth, tmp / f"p{p}-{rep}", a.n, p, a.batch, a.concurrency))
    cpu = {p: sum(c for c, _ in v) / len(v) for p, v in rows.items()}
    wall = {p: sum(w for _, w in v) / len(v) for p, v in rows.items()}
    P = a.partitions
    fixed = (cpu[P] - cpu[1]) / (P - 1)
    print(f"synthetic ResNet50, CPU, {a.n} samples ({a.images} distinct images), batch {a.batch}, "
          f"1 thread per worker, {a.concurrency} worker(s) at a time, mean of {a.repeats} run(s)")
    print(f"{'partitions':>10}  {'CPU s':>8}  {'wall s':>8}  {'CPU / sample ms':>15}")
    for p in (1, P):
        print(f"{p:>10}  {cpu[p]:>8.2f}  {wall[p]:>8.2f}  {1000 * cpu[p] / a.n:>15.1f}")
    print(f"CPU ratio P={P} / P=1: {cpu[P] / cpu[1]:.3f}   goal <= 1.10")
    print(f"fixed cost per extra partition: {fixed:.2f} CPU s "
          f"(ratio <= 1.10 needs n >= ~{int(10 * (P - 1) * fixed / (cpu[1] / a.n))} samples)")


if __name__ == "__main__":
    main()
