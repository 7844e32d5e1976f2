"""Core units: partition contract, targets table, checker regexes, LoadGen log format."""
from __future__ import annotations

import json

import pytest

from evalkit import targets
from evalkit.accuracy_log import Writer, iter_entries
from evalkit.errors import KitError
from evalkit.partition import partition_range

from conftest import evalkit


@pytest.mark.parametrize("n,P", [(1, 1), (24, 3), (25, 3), (13368, 126), (50000, 7), (11, 11), (100, 13)])
def test_partitions_are_contiguous_and_balanced(n, P):
    ranges = [partition_range(n, P, p) for p in range(P)]
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    for (a, b), (c, _) in zip(ranges, ranges[1:]):
        assert b == c
    sizes = [b - a for a, b in ranges]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


def test_partition_bad_input():
    with pytest.raises(KitError, match="n_partitions 5"):
        partition_range(4, 5, 0)
    with pytest.raises(KitError, match="partition 3"):
        partition_range(10, 3, 3)


def test_targets_match_the_checker():
    b = {(m, x.metric, x.kind): x.value for m, t in targets.TARGETS.items() for x in t.bounds}
    assert b[("resnet", "acc", "min")] == 75.6954
    assert b[("bert-99.9", "F1", "min")] == 90.783126
    assert b[("gptj-99", "GEN_LEN", "min")] == 3615190.2
    assert b[("llama2-70b-99", "TOKENS_PER_SAMPLE", "max")] == 323.895
    assert b[("mixtral-8x7b", "TOKENS_PER_SAMPLE", "min")] == 130.356
    assert b[("mixtral-8x7b", "TOKENS_PER_SAMPLE", "max")] == 160.49
    assert b[("mixtral-8x7b@v4.1", "gsm8k_accuracy", "min")] == 73.0422
    assert b[("stable-diffusion-xl", "FID_SCORE", "min")] == 23.01085758
    assert b[("stable-diffusion-xl", "FID_SCORE", "max")] == 23.95007626
    assert b[("3d-unet-99", "DICE", "min")] == 0.853083
    assert b[("dlrm-v2-99.9", "AUC", "min")] == 80.22969
    assert b[("rnnt", "WER", "min")] == 91.62252
    for name in ("retinanet", "bert-99", "gptj-99.9", "llama2-70b-99.9", "3d-unet-99.9", "dlrm-v2-99"):
        assert name in targets.TARGETS


def test_evaluate_two_sided_and_scaled():
    sdxl = targets.get("stable-diffusion-xl")
    ok = targets.evaluate(sdxl, {"CLIP_SCORE": 31.75, "FID_SCORE": 23.5})
    assert ok.passed
    low_fid = targets.evaluate(sdxl, {"CLIP_SCORE": 31.75, "FID_SCORE": 22.9})
    assert not low_fid.passed  # FID has a lower bound too
    g = targets.get("gptj-99")
    m = {"ROUGE1": 43, "ROUGE2": 20, "ROUGEL": 30, "GEN_LEN": 400000}
    assert not targets.evaluate(g, m).passed
    assert targets.evaluate(g, m, scale={"GEN_LEN": 0.1}).passed  # 10 % of the samples


def test_checker_patterns_read_reference_lines():
    assert targets.parse_accuracy_txt("accuracy=76.144%, good=38072, total=50000", "acc") == [76.144]
    assert targets.parse_accuracy_txt('{"exact_match": 83.6, "f1": 90.874}', "F1") == [90.874]
    line = "{'rouge1': 42.9865, 'rouge2': 20.1235, 'rougeL': 29.9881, 'rougeLsum': 40.1, 'gen_len': 4016878, 'gen_num': 13368}"
    assert targets.parse_accuracy_txt(line, "GEN_LEN") == [4016878.0]
    assert targets.parse_accuracy_txt(line, "ROUGEL") == [29.9881]
    # the NumPy 2 trap the kit must avoid
    assert targets.parse_accuracy_txt("{'gen_len': np.int64(258)}", "GEN_LEN") == []


def test_accuracy_log_roundtrip_and_corruption(tmp_path):
    f = tmp_path / "log.json"
    with open(f, "w") as fh:
        w = Writer(fh)
        w.write({"seq_id": 0, "qsl_idx": 3, "data": "0000803F"})
        w.write({"seq_id": 1, "qsl_idx": 1, "data": "00000040", "token_count": 1})
        w.close()
    text = f.read_text()
    assert text == ('[\n{ "seq_id" : 0, "qsl_idx" : 3, "data" : "0000803F" },\n'
                    '{ "seq_id" : 1, "qsl_idx" : 1, "data" : "00000040", "token_count" : 1 }\n]\n')
    assert json.loads(text)[1]["token_count"] == 1
    assert [e["qsl_idx"] for e in iter_entries(f)] == [3, 1]
    f.write_text(text[: len(text) // 2])
    with pytest.raises(KitError, match="corrupt|truncated"):
        list(iter_entries(f))
    f.write_text(text[:-2])
    with pytest.raises(KitError, match="truncated"):
        list(iter_entries(f))


def test_targets_cli_prints_every_model():
    cp = evalkit("targets", check=True)
    for name in ("resnet", "retinanet", "bert-99", "bert-99.9", "gptj-99", "gptj-99.9", "llama2-70b-99",
                 "llama2-70b-99.9", "mixtral-8x7b", "mixtral-8x7b@v4.1", "stable-diffusion-xl", "3d-unet-99",
                 "3d-unet-99.9", "dlrm-v2-99", "dlrm-v2-99.9", "rnnt"):
        assert f"\n{name} " in cp.stdout, name


def test_synthetic_two_sided_windows_keep_their_relative_width():
    """A synthetic reference replaces the real one; a two-sided window (SDXL's absolute CLIP/FID
    bounds) must not collapse to a single value that float noise fails."""
    sdxl = targets.get("stable-diffusion-xl")
    ref = {"CLIP_SCORE": 100.0, "FID_SCORE": 0.1357}
    noisy = {"CLIP_SCORE": 100.0, "FID_SCORE": 0.1357 * (1 + 1e-12)}
    assert targets.evaluate(sdxl, noisy, reference_override=ref).passed
    far = {"CLIP_SCORE": 97.0, "FID_SCORE": 0.1357}
    assert not targets.evaluate(sdxl, far, reference_override=ref).passed
    rows = targets.evaluate(sdxl, noisy, reference_override=ref).rows
    fid = sorted(r["target"] for r in rows if r["metric"] == "FID_SCORE")
    assert fid[0] == pytest.approx(0.1357 * 23.01085758 / 23.48046692) and fid[1] > 0.1357


def test_partitions_cut_by_work_balance_the_work():
    """3D-UNet's cases differ hugely in size: cut by voxels, contiguous, in index order, never empty."""
    import random

    from evalkit.partition import work_bounds

    w = [100, 1, 1, 1, 1, 100, 1, 1, 100, 1]
    assert [partition_range(10, 3, p, w) for p in range(3)] == [(0, 3), (3, 7), (7, 10)]
    assert [sum(w[a:b]) for a, b in (partition_range(10, 3, p, w) for p in range(3))] == [102, 103, 102]
    rng = random.Random(0)
    for _ in range(500):
        n = rng.randint(1, 40)
        P = rng.randint(1, n)
        work = [rng.randint(0, 1000) for _ in range(n)]
        b = work_bounds(n, P, work)
        assert b[0] == 0 and b[-1] == n and all(x < y for x, y in zip(b, b[1:]))
        assert [partition_range(n, P, p, work) for p in range(P)] == list(zip(b, b[1:]))


def test_cpu_torch_hides_torchao_cuda_extension_noise_only():
    """transformers imports torchao whenever it is installed; on a CPU-only torch torchao logs one
    "Failed to load ..._C_*.so" line per CUDA extension into every run's log. The kit drops exactly
    those lines (evalkit/cli.py), nothing else torchao says."""
    import subprocess
    import sys

    import torch

    if torch.version.cuda is not None:
        pytest.skip("a CUDA torch loads torchao's extensions: nothing to drop")
    code = ("import logging, sys\n{}import torchao\nlogging.getLogger('torchao').warning('another warning')\n")
    bare = subprocess.run([sys.executable, "-c", code.format("")], capture_output=True, text=True, check=True)
    kit = subprocess.run([sys.executable, "-c", code.format("import evalkit.cli\n")], capture_output=True,
                         text=True, check=True)
    assert "Failed to load" in bare.stderr  # the noise exists without the kit's filter
    assert "Failed to load" not in kit.stderr and "another warning" in kit.stderr, kit.stderr
