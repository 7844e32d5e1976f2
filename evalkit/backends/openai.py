"""`openai`: LLM prompts to an OpenAI-compatible server's /v1/completions (vLLM, TRT-LLM,
SGLang, `transformers serve`, an NPU's server). The benchmark's text_io() gives the prompt text,
the generation settings and the payload encoding; this file only speaks HTTP.

Options (--server_url / SERVER_URL, --server_urls / SERVER_URLS, --backend_option K=V):
  server_url   base URL, e.g. http://127.0.0.1:8000
  server_urls  comma-separated base URLs, one server per partition or a pool: partition p is served
               by url[p % n] (8 nodes each running vLLM with TP=8 form one run). One of the two is
               required. URLs are where, like a device: not in the config hash; the manifest records
               which server answered each partition and the model ids it listed (/v1/models). What
               the server serves is identified by the checkpoint dir (--model_path, hashed by content):
               it must be the checkpoint the server loaded (its tokenizer encodes the prompts and
               decodes the answers, as the reference's accuracy path does).
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

from urllib.parse import urlsplit

from ..errors import KitError
from . import Backend, SampleError

APIS = ("openai", "vllm", "transformers")


def check_url(url: str, what: str) -> str:
    """`url` without a trailing slash; KitError naming `what` unless it is http(s)://host[:port][/path]."""
    u = str(url).strip()
    try:
        parts = urlsplit(u)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as e:
        raise KitError(f"{what} {u!r} is not a URL ({e}); e.g. http://10.0.0.5:8000") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise KitError(f"{what} {u!r} is not an http(s)://host:port URL; e.g. http://10.0.0.5:8000")
    return u.rstrip("/")


def server_list(options: dict) -> list[str]:
    """The servers of a run: SERVER_URLS (comma-separated) or SERVER_URL; KitError when neither or both."""
    many, one = options.get("server_urls"), options.get("server_url")
    if many and one and str(one).rstrip("/") not in [u.strip().rstrip("/") for u in str(many).split(",")]:
        raise KitError(f"SERVER_URL {one} and SERVER_URLS {many} both given (--server_url, --server_urls); "
                       f"give one of them")
    if many:
        items = [u for u in str(many).split(",")]
        if any(not u.strip() for u in items):
            raise KitError(f"SERVER_URLS {many!r} (--server_urls) has an empty entry; list base URLs separated "
                           f"by commas")
        return [check_url(u, f"SERVER_URLS entry {i}") for i, u in enumerate(items)]
    if not one:
        raise KitError("backend openai needs the server's base URL: SERVER_URL=http://host:port (--server_url), "
                       "or one per partition: SERVER_URLS=http://node1:8000,http://node2:8000 (--server_urls)")
    return [check_url(one, "SERVER_URL (--server_url)")]


class _Transient(Exception):
    pass


class OpenAIBackend(Backend):
    name = "openai"

    @classmethod
    def for_partition(cls, options: dict, p: int) -> dict:
        """Partition p's server: url[p % n] of SERVER_URLS (or SERVER_URL); every URL checked."""
        urls = server_list(options)
        out = dict(options, server_url=urls[p % len(urls)])
        if len(urls) > 1 or options.get("server_urls"):
            out["server_urls"] = ",".join(urls)
        for key in ("timeout", "backoff"):
            if key in out:
                try:
                    if float(out[key]) <= 0:
                        raise ValueError
                except ValueError:
                    raise KitError(f"--backend_option {key}={out[key]}: a number of seconds > 0") from None
        for key in ("retries", "concurrency"):
            if key in out and not str(out[key]).isdigit():
                raise KitError(f"--backend_option {key}={out[key]}: a whole number")
        if out.get("server_api", "openai") not in APIS:
            raise KitError(f"backend openai: --backend_option server_api={out['server_api']!r} is not one of "
                           f"{', '.join(APIS)}")
        return out

    def load(self, bench, model_path: Path, device: str, data_type: str, options: dict) -> None:
        o = self.options
        self.base = server_list(o)[0] if not o.get("server_url") else check_url(o["server_url"], "SERVER_URL")
        self.url = self.base + "/v1/completions"
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
        self.served = self._served_models()
        if o.get("model") and self.served and o["model"] not in self.served:
            raise KitError(f"backend openai: --backend_option model={o['model']} is not served by {self.base} "
                           f"(its /v1/models lists {', '.join(self.served)})")

    def _served_models(self) -> list[str] | None:
        """The model ids the server lists at /v1/models (a serving fact for the manifest); None when
        it has no such endpoint or does not answer now (the requests then retry and name the sample)."""
        rq = urllib.request.Request(self.base + "/v1/models")
        try:
            with urllib.request.urlopen(rq, timeout=min(self.timeout, 30)) as r:
                data = json.loads(r.read())
            return [str(m.get("id")) for m in data.get("data", []) if isinstance(m, dict)]
        except (urllib.error.URLError, ConnectionError, TimeoutError, socket.timeout, ValueError, AttributeError):
            return None

    def body(self, req: dict) -> dict:
        """The /v1/completions request for one TextIO request; KitError for settings the API lacks."""
        gen = dict(req["generation"])
        stop = gen.pop("stop", None)  # stop strings: the API's own field on every server
        body: dict[str, Any] = {"prompt": req["prompt"], "max_tokens": int(gen["max_new_tokens"])}
        if self.api == "vllm" and req.get("prompt_ids") is not None:
            body["prompt"] = [int(i) for i in req["prompt_ids"]]  # the reference's token ids, no re-encoding
        elif req.get("text_exact") is False:
            raise KitError(f"backend openai (server_api={self.api}, {self.url}): this prompt's token ids do not "
                           f"survive the trip through text (the server would encode other ids than the "
                           f"reference's); use a server that takes token ids (server_api=vllm)")
        if self.options.get("model"):
            body["model"] = self.options["model"]
        if stop:
            body["stop"] = list(stop)
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
            if stop:  # the in-process generator keeps the stop sequence in the answer
                body["include_stop_str_in_output"] = True
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
        return self.text.payload(text, _token_ids(choice), choice.get("finish_reason"), item)

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
        d = {"server_url": self.url, "server_api": self.api, "model": self.options.get("model"),
             "served_models": self.served}
        if self.options.get("server_urls"):
            d["server_urls"] = self.options["server_urls"].split(",")
        return d


def _token_ids(choice: dict) -> list[int] | None:
    """Token ids when the server returned them (vLLM: logprobs.tokens as "token_id:N"), else None."""
    tokens = (choice.get("logprobs") or {}).get("tokens")
    if not tokens or not all(isinstance(t, str) and t.startswith("token_id:") for t in tokens):
        return None
    return [int(t.split(":", 1)[1]) for t in tokens]
