"""BACKEND=openai: synthetic GPT-J through a real `transformers serve` on 127.0.0.1 (beam 4 via its
generation_config field, the reference setting), a down server that leaves finished partitions in
the run, and retries/timeouts/refusals against small HTTP servers that misbehave on purpose."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from s3server import free_port
from conftest import evalkit, kit_env, one_line_error

N = 8  # conftest.SYNTH_N: the set the contract test uses too
SERVE = shutil.which("transformers", path=str(Path(sys.executable).parent))


@pytest.fixture(scope="module")
def synth(synthetic) -> Path:
    return synthetic("gpt-j", N)


@pytest.fixture(scope="module")
def server(synth, tmp_path_factory):
    """`transformers serve` pinned to the synthetic checkpoint; yields its base URL."""
    if SERVE is None:
        pytest.fail("`transformers` CLI not in this env: pip install 'transformers[serving]==5.23.0'")
    port = free_port()
    log = open(tmp_path_factory.mktemp("serve") / "serve.log", "w+")
    proc = subprocess.Popen([SERVE, "serve", str(synth / "model"), "--host", "127.0.0.1", "--port", str(port),
                             "--device", "cpu", "--dtype", "float32"], stdout=log, stderr=subprocess.STDOUT,
                            env=kit_env(OMP_NUM_THREADS=1))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    log.seek(0)
                    pytest.fail(f"transformers serve did not come up on {url}:\n{log.read()[-2000:]}")
                time.sleep(1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def run(synth, log, url, *extra):
    return evalkit("run", "gpt-j", "--dataset", synth / "dataset", "--model_path", synth / "model",
                   "--log_path", log, "--threads", 1, "--backend", "openai", "--server_url", url,
                   "--backend_option", "server_api=transformers", "--batch_size", 3, *extra)


def test_down_server_keeps_finished_partitions_then_passes(synth, server, tmp_path):
    log = tmp_path / "run"
    p0 = run(synth, log, server, "--n_partitions", 2, "--partition_offset", 0)
    assert p0.returncode == 0, p0.stderr
    dead = f"http://127.0.0.1:{free_port()}"
    p1 = run(synth, log, dead, "--n_partitions", 2, "--partition_offset", 1,
             "--backend_option", "retries=2", "--backend_option", "backoff=0.05")
    err = one_line_error(p1)
    first = N - N // 2  # partition 1's first sample
    assert f"{dead}/v1/completions failed 2 times" in err and f"sample {first}" in err, err
    assert (log / "0" / "partition.json").exists() and not (log / "1" / "partition.json").exists()
    # The server's URL is not in the config hash: partition 1 now runs against the live server.
    p1 = run(synth, log, server, "--n_partitions", 2, "--partition_offset", 1)
    assert p1.returncode == 0 and "RESULT: PASS" in p1.stdout, p1.stderr
    m = json.loads((log / "1" / "partition.json").read_text())
    assert m["backend"]["name"] == "openai" and m["backend"]["server_api"] == "transformers"


# --- misbehaving servers, in process -------------------------------------------------------------

class _Stub(BaseHTTPRequestHandler):
    script: list = []   # per request: ("status", code) | ("sleep", seconds) | ("ok", text)
    seen: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append(body)
        kind, arg = self.script[min(len(self.seen), len(self.script)) - 1]
        if kind == "sleep":
            time.sleep(arg)
            kind, arg = "ok", "late"
        data = json.dumps({"choices": [{"text": arg}]} if kind == "ok" else {"detail": "boom"}).encode()
        try:
            self.send_response(200 if kind == "ok" else arg)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(data)
        except BrokenPipeError:  # the client timed out first
            pass

    def log_message(self, *a):
        pass


@pytest.fixture
def stub():
    _Stub.seen = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def backend(synth, url, **opts):
    from evalkit.backends import create
    from language.gptj.benchmark import BENCHMARK

    b = create("openai", {"server_url": url, "backoff": 0.01, **opts})
    b.load(BENCHMARK, synth / "model", "cpu", "fp32", {})
    return b


def test_transient_errors_are_retried(synth, stub):
    _Stub.script = [("status", 503), ("status", 500), ("ok", " hello world")]
    b = backend(synth, stub, server_api="transformers", retries=3)
    (ids,) = b.run(["a prompt"])
    assert len(_Stub.seen) == 3 and b.text.tok.decode(ids.tolist()) == " hello world"
    gen = json.loads(_Stub.seen[0]["generation_config"])
    assert gen["num_beams"] == 4 and gen["min_new_tokens"] == 30 and gen["do_sample"] is False


@pytest.mark.parametrize("script,opts,expect,requests", [
    ([("status", 500)], {"retries": 3}, "failed 3 times: HTTP 500", 3),
    ([("sleep", 2.0)], {"retries": 2, "timeout": 0.3}, "failed 2 times: no answer within 0.3 s", 2),
    ([("status", 422)], {"retries": 3}, "refused the request: HTTP 422", 1),  # not transient: no retry
], ids=["5xx", "timeout", "4xx"])
def test_bounded_retries_name_url_and_position(synth, stub, script, opts, expect, requests):
    from evalkit.backends import SampleError

    _Stub.script = script
    b = backend(synth, stub, server_api="transformers", **opts)
    with pytest.raises(SampleError) as e:
        b.run(["first", "second"][:1])
    assert expect in str(e.value) and f"{stub}/v1/completions" in str(e.value) and e.value.position == 0
    assert len(_Stub.seen) == requests
    b.close()


def test_beam_search_on_a_standard_server_is_a_clear_error(synth, stub):
    from evalkit.errors import KitError

    _Stub.script = [("ok", "x")]
    with pytest.raises(KitError, match=r"beam search \(num_beams=4\) is not in this API"):
        backend(synth, stub, server_api="openai").run(["p"])
    with pytest.raises(KitError, match="vLLM dropped it"):
        backend(synth, stub, server_api="vllm").run(["p"])
    assert _Stub.seen == []  # refused before sending anything
    b = backend(synth, stub, server_api="vllm")
    b.text.gen["num_beams"] = 1  # greedy: standard fields plus vLLM's min_tokens
    body = b.body(b.text.request("p"))
    assert body["temperature"] == 0.0 and body["min_tokens"] == 30 and body["max_tokens"] == 128


def test_payload_ids_and_truncated_prompt(synth):
    from language.gptj.benchmark import BENCHMARK, CNNDailyMail, MAX_INPUT_TOKENS

    io = BENCHMARK.text_io(synth / "model", {})
    # token ids from the server win (vLLM's "token_id:N"); else the text is re-tokenised
    from evalkit.backends.openai import _token_ids

    assert _token_ids({"logprobs": {"tokens": ["token_id:5", "token_id:7"]}}) == [5, 7]
    assert np.array_equal(io.payload("ignored", [5, 7]), np.array([5, 7], np.int64))
    text = " the quick summary"
    assert io.tok.decode(io.payload(text, None).tolist()) == text
    # sample 2 is longer than 1919 tokens: the request carries the text of exactly the first 1919
    prompt = io.request(CNNDailyMail(synth / "dataset").load(2))["prompt"]
    assert len(io.tok(prompt)["input_ids"]) == MAX_INPUT_TOKENS
