"""`openai`: LLM prompts to an OpenAI-compatible server's /v1/completions (vLLM, TRT-LLM,
SGLang, `transformers serve`, an NPU's server). The benchmark's text_io() gives the prompt text,
the generation settings and the payload encoding; this file only speaks HTTP.

Options (--server_url / SERVER_URL, --backend_option K=V):
  server_url   base URL, e.g. http://127.0.0.1:8000 (required)
  server_api   how the generation settings travel:
               openai        standard fields only: greedy (temperature 0) + max_tokens; settings
                             the standard cannot express (beam search, min_new_tokens) are an error
               vllm          + min_tokens; token ids from logprobs (return_tokens_as_token_ids);
                             beam search is an error (vLLM dropped it from /v1/completions)
               transformers  `transformers serve`: the full HF generate settings as its
                             generation_config field (beam search included)
  model        the request's "model" (default: none; servers serving one model use it)
  concurrency  requests in flight (default: the batch size, at most 64; each partition has its own)
  timeout      seconds per request (default 600)
  retries      attempts per request on transient errors: connection refused/reset, timeout,
               HTTP 5xx/429 (default 4); backoff doubles from `backoff` seconds (default 1)
"""
from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..errors import KitError
from . import Backend, SampleError

APIS = ("openai", "vllm", "transformers")


class _Transient(Exception):
    pass


class OpenAIBackend(Backend):
    name = "openai"

    def load(self, bench, model_path: Path, device: str, data_type: str, options: dict) -> None:
        o = self.options
        if not o.get("server_url"):
            raise KitError("backend openai needs the server's base URL: SERVER_URL=http://host:port "
                           "(or --server_url)")
        self.url = str(o["server_url"]).rstrip("/") + "/v1/completions"
        self.api = o.get("server_api", "openai")
        if self.api not in APIS:
            raise KitError(f"backend openai: server_api {self.api!r} is not one of {', '.join(APIS)}")
        self.timeout = float(o.get("timeout", 600))
        self.attempts = max(1, int(o.get("retries", 4)))
        self.backoff = float(o.get("backoff", 1.0))
        self.concurrency = int(o.get("concurrency", 0))
        # data_type/device are the server's business; the checkpoint dir gives the tokenizer.
        self.text = bench.text_io(Path(model_path), options)
        self.pool: ThreadPoolExecutor | None = None

    def body(self, req: dict) -> dict:
        """The /v1/completions request for one TextIO request; KitError for settings the API lacks."""
        gen = req["generation"]
        body: dict[str, Any] = {"prompt": req["prompt"], "max_tokens": int(gen["max_new_tokens"])}
        if self.options.get("model"):
            body["model"] = self.options["model"]
        if self.api == "transformers":
            body["generation_config"] = json.dumps(gen)
            return body
        if int(gen.get("num_beams", 1)) > 1:
            raise KitError(f"backend openai (server_api={self.api}, {self.url}): beam search "
                           f"(num_beams={gen['num_beams']}) is not in this API"
                           + ("; vLLM dropped it from /v1/completions" if self.api == "vllm" else "")
                           + ". Use a server that has it (server_api=transformers), or greedy generation "
                             "(--option num_beams=1; not the MLPerf closed-division setting)")
        body["temperature"] = 0.0
        if self.api == "vllm":
            body.update(min_tokens=int(gen.get("min_new_tokens", 0)), logprobs=1, return_tokens_as_token_ids=True)
        elif int(gen.get("min_new_tokens", 0)) > 0:
            raise KitError(f"backend openai (server_api=openai, {self.url}): min_new_tokens="
                           f"{gen['min_new_tokens']} has no field in the standard completions API; use "
                           f"server_api=vllm (min_tokens) or transformers (generation_config)")
        return body

    def _post(self, body: dict) -> dict:
        data = json.dumps(body).encode()
        rq = urllib.request.Request(self.url, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(rq, timeout=self.timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            detail = e.read(300).decode(errors="replace").strip().replace("\n", " ")
            if e.code >= 500 or e.code == 429:
                raise _Transient(f"HTTP {e.code} {detail}") from None
            raise KitError(f"HTTP {e.code} {detail}") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError, socket.timeout) as e:
            reason = getattr(e, "reason", e)
            if isinstance(reason, (TimeoutError, socket.timeout)):
                reason = f"no answer within {self.timeout:g} s"
            raise _Transient(str(reason)) from None
        except ValueError as e:  # the body is not JSON: the server is not OpenAI-compatible
            raise KitError(f"response is not JSON ({e})") from None

    def _one(self, position: int, item: Any):
        req = self.text.request(item)
        body = self.body(req)
        for attempt in range(1, self.attempts + 1):
            try:
                out = self._post(body)
                break
            except _Transient as e:
                if attempt == self.attempts:
                    raise SampleError(f"backend openai: {self.url} failed {attempt} times: {e}", position) from None
                time.sleep(self.backoff * 2 ** (attempt - 1))
            except KitError as e:
                raise SampleError(f"backend openai: {self.url} refused the request: {e}", position) from None
        try:
            choice = out["choices"][0]
            text = choice["text"]
        except (KeyError, IndexError, TypeError):
            raise SampleError(f"backend openai: {self.url} answered without choices[0].text: "
                              f"{json.dumps(out)[:200]}", position) from None
        return self.text.payload(text, _token_ids(choice))

    def run(self, inputs: Any) -> list:
        items = list(inputs)
        if self.pool is None:  # in flight: min(batch, concurrency); the pool starts threads as needed
            self.pool = ThreadPoolExecutor(max_workers=self.concurrency or 64, thread_name_prefix="openai")
        futures = [self.pool.submit(self._one, i, x) for i, x in enumerate(items)]
        # in order: the first failed sample of the batch is the one reported
        return [f.result() for f in futures]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
            self.pool = None

    def describe(self) -> dict:
        return {"server_url": self.url, "server_api": self.api, "model": self.options.get("model")}


def _token_ids(choice: dict) -> list[int] | None:
    """Token ids when the server returned them (vLLM: logprobs.tokens as "token_id:N"), else None."""
    tokens = (choice.get("logprobs") or {}).get("tokens")
    if not tokens or not all(isinstance(t, str) and t.startswith("token_id:") for t in tokens):
        return None
    return [int(t.split(":", 1)[1]) for t in tokens]
