"""Serving at cluster scale (BACKEND=openai, docs/serving.md): partitions spread over several real
OpenAI-compatible servers on 127.0.0.1 (SERVER_URLS, partition p -> url[p % n]), the tokens equal
to the in-process run's, a server killed mid-run and the rerun answering from the response cache.

The servers are `transformers serve` on the synthetic Llama-2 checkpoint, with vLLM's
return_tokens_as_token_ids added (tests/serve_ids.py says why)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from s3server import free_port
from conftest import ROOT, evalkit, kit_env, one_line_error

N = 8  # conftest.SYNTH_N: the Llama-2 set test_llama2 and the contract test share
MERGED = "merged_mlperf_log_accuracy.json"


@pytest.fixture(scope="module")
def synth(synthetic) -> Path:
    return synthetic("llama2", N)


class Server:
    """One `transformers serve` (tests/serve_ids.py) on a free port; .log counts its requests."""

    def __init__(self, model: Path, log: Path):
        self.port, self.log = free_port(), log
        self.url = f"http://127.0.0.1:{self.port}"
        self._out = open(log, "w")
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "serve_ids.py"), str(model), "--host",
                                      "127.0.0.1", "--port", str(self.port), "--device", "cpu", "--dtype", "float32"],
                                     stdout=self._out, stderr=subprocess.STDOUT, env=kit_env(OMP_NUM_THREADS=1))

    def wait_up(self, timeout: float = 180) -> "Server":
        deadline = time.time() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2):
                    return self
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"server did not come up on {self.url}:\n{self.log.read_text()[-2000:]}")
                time.sleep(0.5)

    def requests(self) -> int:
        return self.log.read_text(errors="replace").count("[Request received]")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._out.close()


@pytest.fixture(scope="module")
def servers(synth, tmp_path_factory):
    """Two servers, started together (the last test kills the second)."""
    d = tmp_path_factory.mktemp("servers")
    made = [Server(synth / "model", d / f"serve{i}.log") for i in range(2)]
    try:
        yield [s.wait_up() for s in made]
    finally:
        for s in made:
            s.kill()


@pytest.fixture(scope="module")
def in_process(synth) -> dict[int, list[int]]:
    """qsl_idx -> the token ids of the in-process PyTorch path (fp32, batch 1: what a run at any batch
    size writes, test_contract proves it), computed here, in this process."""
    import torch

    from language.llama2.benchmark import BENCHMARK as b

    torch.set_num_threads(1)
    ds = b.open_dataset(synth / "dataset")
    g = b.load_model(synth / "model", "cpu", "fp32", {})
    return {i: b.postprocess(b.forward(g, [ds.load(i)]), 1)[0].tolist() for i in range(N)}


def tokens(run_dir: Path) -> dict[int, list[int]]:
    import numpy as np

    return {e["qsl_idx"]: np.frombuffer(bytes.fromhex(e["data"]), np.int32).tolist()
            for e in json.loads((run_dir / MERGED).read_text())}


def served_run(synth, log, urls, *extra):
    return evalkit("run", "llama2", "--dataset", synth / "dataset", "--model_path", synth / "model",
                   "--log_path", log, "--n_devices", 2, "--threads", 1, "--backend", "openai",
                   "--server_urls", ",".join(urls), "--backend_option", "server_api=transformers", *extra)


def test_two_servers_two_partitions_equal_the_in_process_tokens(synth, servers, in_process, tmp_path):
    log = tmp_path / "run"
    cp = served_run(synth, log, [s.url for s in servers], "--batch_size", 2)
    assert cp.returncode == 0 and "RESULT: PASS" in cp.stdout, cp.stderr
    assert tokens(log) == in_process  # every token id of every sample
    for p, s in enumerate(servers):  # partition p went to url[p % 2], recorded as a serving fact
        m = json.loads((log / str(p) / "partition.json").read_text())
        assert m["backend"]["server_url"] == s.url + "/v1/completions"
        assert m["backend"]["server_urls"] == [x.url for x in servers]
        assert s.requests() >= N // 2
    # URLs are where, not what: the config hash is the in-process run's but for the backend's name
    a = json.loads((log / "0" / "partition.json").read_text())["config"]
    assert "server_url" not in json.dumps(a) and a["backend"] == "openai"


def test_a_server_killed_mid_run_resumes_from_the_cache(synth, servers, in_process, tmp_path):
    """Server 1 dies after partition 1 answered some samples; the rerun, pointed at the live server
    (URLs are not in the config hash), sends only the unanswered ones and equals the in-process run.
    Runs last: it kills the module's second server."""
    log = tmp_path / "run"
    keep, victim = servers
    run = subprocess.Popen([sys.executable, "-m", "evalkit", "run", "llama2", "--dataset", str(synth / "dataset"),
                            "--model_path", str(synth / "model"), "--log_path", str(log), "--n_devices", "2",
                            "--threads", "1", "--backend", "openai", "--server_urls", f"{keep.url},{victim.url}",
                            "--backend_option", "server_api=transformers", "--backend_option", "retries=2",
                            "--backend_option", "backoff=0.05", "--batch_size", "1"],
                           cwd=ROOT, env=kit_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cache = log / "1" / "responses.cache"
    deadline = time.time() + 300
    try:  # the cache header is 40 bytes, a record 16 + payload: kill once partition 1 has an answer cached
        while not (cache.exists() and cache.stat().st_size > 40 + 16) and run.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        victim.kill()
        out, err = run.communicate(timeout=300)
    finally:
        victim.kill()
    worker = (log / "1" / "worker.log").read_text()
    assert run.returncode != 0, f"partition 1 finished before its server was killed (raced):\n{err}"
    assert f"{victim.url}/v1/completions failed 2 times" in worker, worker
    assert (log / "0" / "partition.json").exists() and not (log / "1" / "partition.json").exists()

    before = keep.requests()  # partition 0 is complete (skipped): every request now is partition 1's
    cp = served_run(synth, log, [keep.url, keep.url], "--batch_size", 1)  # URLs are not in the config hash
    sent = keep.requests() - before
    assert cp.returncode == 0 and "RESULT: PASS" in cp.stdout, cp.stderr
    worker = (log / "1" / "worker.log").read_text().split("partition 1: ")
    line = [x for x in worker if "answered from" in x]
    assert line, worker
    cached = int(line[-1].split()[0])
    assert 1 <= cached < N // 2 and sent == N // 2 - cached, (line, sent)
    assert tokens(log) == in_process


# --- the server list, found before any work ---------------------------------------------------

def test_partition_p_is_served_by_url_p_mod_n():
    from evalkit.backends.openai import OpenAIBackend

    urls = "http://a:1,http://b:2/,http://c:3"
    got = [OpenAIBackend.for_partition({"server_urls": urls}, p)["server_url"] for p in range(5)]
    assert got == ["http://a:1", "http://b:2", "http://c:3", "http://a:1", "http://b:2"]
    assert OpenAIBackend.for_partition({"server_url": "http://x:9/"}, 3)["server_url"] == "http://x:9"


@pytest.mark.parametrize("opts,expect", [
    (["--server_urls", "http://127.0.0.1:1,,http://127.0.0.1:2"], "SERVER_URLS 'http://127.0.0.1:1,,http://127.0.0.1:2' (--server_urls) has an empty entry"),
    (["--server_urls", "http://127.0.0.1:1,127.0.0.1:2"], "SERVER_URLS entry 1 '127.0.0.1:2' is not an http(s)://host:port URL"),
    (["--server_urls", "http://h:99999"], "SERVER_URLS entry 0 'http://h:99999' is not a URL"),
    (["--server_url", "http://a:1", "--server_urls", "http://b:1"], "SERVER_URL http://a:1 and SERVER_URLS http://b:1 both given"),
    ([], "backend openai needs the server's base URL"),
    (["--server_url", "http://a:1", "--backend_option", "timeout=0"], "--backend_option timeout=0: a number of seconds > 0"),
], ids=["empty", "no-scheme", "port", "both", "none", "timeout"])
def test_bad_server_options_fail_before_the_model_loads(synth, tmp_path, opts, expect):
    cp = evalkit("run", "llama2", "--dataset", synth / "dataset", "--model_path", tmp_path / "absent",
                 "--log_path", tmp_path / "run", "--backend", "openai", *opts)
    err = one_line_error(cp)  # checked in the plan: the absent checkpoint is never reached
    assert expect in err, err
    assert not (tmp_path / "run").exists()


def test_request_carries_the_reference_settings_and_ids(synth):
    """Greedy, the set's cap as max_tokens, min tokens, the prompt's own token ids to vLLM and its
    text to text servers only when it encodes back to those ids; EOS restored from finish_reason."""
    import numpy as np

    from evalkit.backends import create
    from evalkit.errors import KitError
    from language.llama2.benchmark import BENCHMARK

    ds = BENCHMARK.open_dataset(synth / "dataset")
    b = create("openai", {"server_url": "http://127.0.0.1:9", "retries": 1})
    b.text = BENCHMARK.text_io(synth / "model", {})
    b.url, b.api = "http://127.0.0.1:9/v1/completions", "vllm"
    prompt = ds.load(0)
    body = b.body(b.text.request(prompt))
    assert body["prompt"] == prompt.ids.tolist() and body["temperature"] == 0.0
    assert body["max_tokens"] == min(1024, prompt.cap) and body["min_tokens"] == 1
    assert body["return_tokens_as_token_ids"] is True and body["logprobs"] == 1
    b.api = "transformers"
    gen = json.loads(b.body(b.text.request(prompt))["generation_config"])
    assert gen["do_sample"] is False and gen["num_beams"] == 1 and gen["max_new_tokens"] == body["max_tokens"]
    req = b.text.request(prompt)
    req["text_exact"] = False  # a prompt whose text would encode to other ids: refused, not sent
    with pytest.raises(KitError, match="do not survive the trip through text"):
        b.body(req)
    eos = b.text.tok.eos_token_id
    assert b.text.payload("", [5, 7], "stop", prompt).tolist() == [5, 7, eos]
    assert b.text.payload("", [5, 7], "length", prompt).tolist() == [5, 7]
    assert np.array_equal(b.text.payload("", [5, eos, eos], "stop", prompt), [5, eos])
