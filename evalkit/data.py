"""Datasets, checkpoints and verified logs through DVC: import once, pull everywhere.

Every DVC call of the kit goes through `_dvc` here: it finds the binary, bounds
the remote's retries, keeps dvc's (redacted) output in .dvc/tmp/evalkit-dvc.log
and turns a failure into one KitError sentence that says what to do. Nothing
here knows about LoadGen or partitions beyond the files a run dir holds.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from .errors import KitError
from .manifest import read_synthetic
from .util import KIT_CLI, ROOT, sha256_file

# The registry (numpy, the model folders) is imported where a model is needed, so that `make remote`
# and the checks `make data_add_<model>` does before building an env run in any python3
# (`python3 -m evalkit.data ...`, below), with no kit env built yet.

REMOTE = "mlperf-data"
UNSET_URL = "s3://set-me-with-make-remote/mlperf-data"  # shipped in .dvc/config until `make remote`
# URLs of the kit's own hints, pasted unchanged: not a bucket anyone means.
PLACEHOLDER_URLS = (UNSET_URL, "s3://bucket/prefix", "s3://bucket", "/path/to/remote", "/path/to/dir")
PLACEHOLDER_ENDPOINTS = ("http://host:port", "https://host:port")
S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")  # AWS's rule for bucket names
# Remote options `make remote` writes for S3: an unreachable endpoint fails in seconds; a read
# may wait longer since one object can be a multi-GB checkpoint shard.
S3_OPTIONS = {"connect_timeout": "3", "read_timeout": "60"}
# botocore reads these; DVC's S3 config has no retry knob. The user's own values win.
AWS_RETRY_DEFAULTS = {"AWS_MAX_ATTEMPTS": "2", "AWS_RETRY_MODE": "standard"}
DVC_LOG = Path(".dvc") / "tmp" / "evalkit-dvc.log"

# What a verified log holds: the run's top-level results plus each partition's files.
RUN_TOP_FILES = ("accuracy.json", "accuracy.txt", "gather.json", "merged_mlperf_log_accuracy.json")
PARTITION_SKIP = ("progress.json",)  # live progress only; says nothing once the run is done


def _bench(model: str):
    from . import registry
    return registry.get(model)


def dataset_dir(model: str) -> Path:
    return ROOT / "data" / "dataset" / model


def model_dir(model: str) -> Path:
    return ROOT / "data" / "models" / model


def log_dir(model: str) -> Path:
    return ROOT / "logs" / "internal" / model


def pointer(path: Path) -> Path:
    return path.with_name(path.name + ".dvc")


def _rel(p: Path) -> str:
    return str(Path(p).resolve().relative_to(ROOT))


def say(msg: str) -> None:
    print(f"[evalkit] {msg}", file=sys.stderr)


def _in_kit(cmd: str) -> str:
    """A command for an error message: pasted from any directory, it runs at the kit root."""
    return f"cd {shlex.quote(str(ROOT))} && {cmd}"




# --------------------------------------------------------------------------- dvc calls

def tools_env() -> Path:
    """The small env that holds dvc (envs/tools.yml), next to the model envs (ENV_DIR moves them)."""
    return Path(os.environ.get("ENV_DIR") or ROOT / ".envs") / "tools"


def dvc_executable() -> str:
    """dvc from PATH, else the tools env's (`make tools`, built by the data targets when no dvc is
    found), else the developer env's (.venv/bin/dvc, `make dev`)."""
    found = shutil.which("dvc")
    if found:
        return found
    for local in (tools_env() / "bin" / "dvc", ROOT / ".venv" / "bin" / "dvc"):
        if local.is_file() and os.access(local, os.X_OK):
            return str(local)
    raise KitError(f"dvc is not installed: run `{_in_kit('make tools')}` (a small env with dvc in "
                   f"{tools_env()}, where the kit finds it) or `pip install 'dvc[s3]'`, then rerun")


_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
_SECRET_PATTERNS = (
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{12,}\b"),
    re.compile(r"(?i)((?:secret_access_key|access_key_id|session_token|aws_secret_access_key)\s*[=:]\s*)\S+"),
    re.compile(r"(//)[^/@\s]+:[^/@\s]+@"),  # credentials inside a URL
)


def redact(text: str) -> str:
    """Remove anything that may be a credential: the env's own values and key-like strings."""
    for k in _SECRET_ENV:
        v = os.environ.get(k)
        if v and len(v) >= 4:
            text = text.replace(v, "***")
    for pat in _SECRET_PATTERNS:
        text = pat.sub(lambda m: (m.group(1) if m.groups() else "") + "***", text)
    return text


def _dvc_env() -> dict:
    env = dict(os.environ)
    for k, v in AWS_RETRY_DEFAULTS.items():
        env.setdefault(k, v)
    env["DVC_NO_ANALYTICS"] = "1"  # no telemetry call to the internet on every command
    return env


def _dvc(*args: str, what: str) -> str:
    """Run `dvc ARGS` at the kit root; its output goes to DVC_LOG, a failure becomes one KitError line."""
    exe = dvc_executable()
    try:
        cp = subprocess.run([exe, *args], cwd=ROOT, env=_dvc_env(), capture_output=True, text=True)
    except OSError as e:
        raise KitError(f"{what}: cannot start {exe} ({e.strerror}); reinstall dvc (`{_in_kit('make dev')}`)") from None
    out = redact(cp.stdout + cp.stderr)
    log = ROOT / DVC_LOG
    if log.parent.is_dir():
        with open(log, "a") as f:
            f.write(f"$ dvc {redact(' '.join(args))}  (exit {cp.returncode})\n{out}\n")
    if cp.returncode != 0:
        raise KitError(f"{what}: {_explain(out, args)} (dvc's output: {DVC_LOG})")
    return out


def _explain(out: str, args: tuple[str, ...]) -> str:
    """dvc's multi-line error -> one sentence naming the cause and the fix."""
    low = out.lower()
    if "unable to locate credentials" in low or "nocredentialserror" in low:
        return (f"no AWS credentials for remote '{REMOTE}'; export AWS_ACCESS_KEY_ID and "
                f"AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) and rerun")
    if any(s in low for s in ("invalidaccesskeyid", "signaturedoesnotmatch", "invalidclienttokenid",
                              "accessdenied", "access denied", "forbidden", "expiredtoken")):
        return (f"remote '{REMOTE}' rejected the AWS credentials (wrong key, or no access to the bucket); "
                f"check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE and rerun")
    if any(s in low for s in ("could not connect to the endpoint", "connect timeout", "cannot connect to host",
                              "connection refused", "endpointconnectionerror", "name or service not known",
                              "temporary failure in name resolution", "connecttimeout")):
        return (f"cannot reach remote '{REMOTE}' ({remote_url()}); check the network and the URL/ENDPOINT "
                f"(`{_in_kit('make remote URL=s3://YOUR-BUCKET/PREFIX ENDPOINT=http://HOST:PORT')}`), then rerun")
    if "nosuchbucket" in low or "bucket does not exist" in low or ("(404)" in low and "listobjects" in low):
        return (f"the bucket of remote '{REMOTE}' ({remote_url()}) does not exist; create it or fix the URL "
                f"with `{_in_kit('make remote URL=s3://YOUR-BUCKET/PREFIX')}`")
    if any(s in low for s in ("missing cache files", "neither locally nor on remote", "checkout failed",
                              "nosuchkey", "specified key does not exist")):
        targets = " ".join(a for a in args if a.endswith(".dvc"))
        return (f"objects of {targets or 'the targets'} are missing from remote '{REMOTE}' ({remote_url()}); "
                f"push them again at the root of the clone where they were added: `{_repush(targets)}`")
    if "without a confirmation" in low or "use `-f` to force" in low:
        targets = " ".join(a for a in args if a.endswith(".dvc"))
        return (f"the data of {targets} has local changes that differ from the pointers; restore it with "
                f"`{_in_kit(shlex.quote(dvc_executable()) + ' checkout --force ' + targets)}` "
                f"(or re-import it with make data_add_<model>)")
    if "does not exist" in low and "remote" in low:
        return f"remote '{REMOTE}' is not configured; run `{_in_kit('make remote URL=s3://YOUR-BUCKET/PREFIX')}`"
    errors = [ln.strip() for ln in out.splitlines() if ln.strip().startswith("ERROR")]
    last = errors[-1] if errors else (out.strip().splitlines() or ["no output"])[-1]
    return re.sub(r"\s+", " ", last)[:300]


def _repush(targets: str) -> str:
    """The kit command that pushes these pointers' data again (dvc add + push of what is laid out),
    run at the root of the clone that has the data: another machine's, so no `cd` to this one."""
    for t in targets.split():
        m = re.fullmatch(r"logs/internal/(.+)\.dvc", t)
        if m:
            return f"make publish_log_{m.group(1)} RUN=/path/to/the/run_dir"
    found = (re.fullmatch(r"data/(?:dataset|models)/(.+)\.dvc", t) for t in targets.split())
    models = sorted({m.group(1) for m in found if m})
    if len(models) == 1:
        m = models[0]
        return f"make data_add_{m} SRC=data/dataset/{m}" + (
            f" MODEL_SRC=data/models/{m}" if f"data/models/{m}.dvc" in targets.split() else "")
    return "make data_add_<model> SRC=data/dataset/<model> MODEL_SRC=data/models/<model>"


_REMOTE_HEADER = re.compile(r"""^\s*\[\s*'?remote\s+"%s"'?\s*\]\s*$""" % re.escape(REMOTE))


def remote_url() -> str:
    """The remote's URL from .dvc/config.local, else .dvc/config (read directly: a dvc start costs
    seconds on a busy machine, and this runs on the error path of an unreachable remote too)."""
    for name in ("config.local", "config"):
        f = ROOT / ".dvc" / name
        if not f.is_file():
            continue
        inside = False
        for line in f.read_text().splitlines():
            if line.strip().startswith("["):
                inside = bool(_REMOTE_HEADER.match(line))
            elif inside and "=" in line and line.split("=", 1)[0].strip() == "url":
                return redact(line.split("=", 1)[1].strip())
    return "no URL"


def _require_remote() -> None:
    url = remote_url()
    if url in ("no URL",) + PLACEHOLDER_URLS:
        raise KitError(f"DVC remote '{REMOTE}' points at no bucket yet; run "
                       f"`{_in_kit('make remote URL=s3://YOUR-BUCKET/PREFIX')}` (add ENDPOINT=http://HOST:PORT for an "
                       f"S3 server other than AWS; URL may also be a local or shared dir)")


def check_remote_url(url: str, endpoint: str | None = None) -> None:
    """A URL a person means: not empty, not the hints' placeholders, S3 options only for s3://."""
    if not url.strip():
        raise KitError("make remote needs URL=s3://<your-bucket>/<prefix> (or a local or shared dir)")
    if url.rstrip("/") in PLACEHOLDER_URLS or re.search(r"[<>]", url):
        raise KitError(f"URL={url} is the placeholder of the hint, not a bucket: put your bucket's name and "
                       f"prefix in (or a local or shared dir) and rerun `make remote URL=...`")
    bucket = url[len("s3://"):].split("/")[0] if url.startswith("s3://") else None
    if bucket is not None and not S3_BUCKET.fullmatch(bucket):
        raise KitError(f"URL={url}: '{bucket}' is not an S3 bucket name (3-63 lowercase letters, digits, dots, "
                       f"hyphens): put your bucket's name in and rerun `make remote URL=...`")
    if endpoint is not None:
        if endpoint.rstrip("/").lower() in PLACEHOLDER_ENDPOINTS or re.search(r"[<>]", endpoint):
            raise KitError(f"ENDPOINT={endpoint} is the placeholder of the hint: give your S3 server's "
                           f"address (e.g. http://10.0.0.5:9000), or leave ENDPOINT out for AWS")
        if not url.startswith("s3://"):
            raise KitError(f"ENDPOINT is for S3 remotes only; {url} is not s3://")


def _config_sections(text: str) -> list[list[str]]:
    """.dvc/config as [header line, body lines...] blocks; block 0 is what precedes the first header."""
    blocks: list[list[str]] = [[""]]
    for line in text.splitlines():
        if line.strip().startswith("[") and line.strip().endswith("]"):
            blocks.append([line])
        else:
            blocks[-1].append(line)
    return blocks


def set_remote(url: str, endpoint: str | None = None) -> None:
    """Point the default remote at URL in .dvc/config (S3 remotes get the bounded timeouts).

    Written here, not by `dvc remote add`: the file is DVC's documented INI format, and a teammate
    who only sets the URL needs no dvc installed (`make remote` builds nothing). Comments stay."""
    check_remote_url(url, endpoint)
    cfg = ROOT / ".dvc" / "config"
    blocks = _config_sections(cfg.read_text() if cfg.is_file() else "")
    body = [f"    url = {url}"]
    if url.startswith("s3://"):
        body += [f"    {k} = {v}" for k, v in S3_OPTIONS.items()]
        if endpoint:
            body.append(f"    endpointurl = {endpoint}")
    blocks = [b for b in blocks if not _REMOTE_HEADER.match(b[0])] + [[f"['remote \"{REMOTE}\"']"] + body]
    core = next((b for b in blocks if b[0].strip() == "[core]"), None)
    if core is None:
        blocks.insert(1, core := ["[core]"])
    core[1:] = [ln for ln in core[1:] if ln.split("=", 1)[0].strip() != "remote"] + [f"    remote = {REMOTE}"]
    lines = blocks[0][1:] + [ln for b in blocks[1:] for ln in b]
    cfg.parent.mkdir(exist_ok=True)
    tmp = cfg.with_name(".config.partial")
    tmp.write_text("\n".join(ln for ln in lines) + "\n")
    os.replace(tmp, cfg)
    say(f"remote '{REMOTE}' -> {redact(url)}; commit it with: git add .dvc/config && git commit -m 'dvc remote'")


# --------------------------------------------------------------------------- pull

def _up_to_date(pointers: list[Path]) -> bool:
    out = _dvc("status", "--json", *map(_rel, pointers), what="dvc status")
    try:
        return json.loads(out.strip().splitlines()[-1] if out.strip() else "{}") == {}
    except ValueError:
        return False


def _pull(pointers: list[Path], what: str) -> None:
    """Check out exactly these pointers' data; a no-op (no remote contact) when it is already there."""
    outs = [p.with_name(p.name[:-len(".dvc")]) for p in pointers]
    if all(o.exists() for o in outs) and _up_to_date(pointers):
        say(f"{', '.join(map(_rel, outs))} already present")
        return
    _require_remote()
    _dvc("pull", *map(_rel, pointers), what=f"pulling {what}")
    say(f"pulled {', '.join(map(_rel, outs))}")


def pull_model_data(model: str) -> None:
    """Dataset + checkpoint of MODEL (the build step of `make MODEL` with DATA=real)."""
    _bench(model)
    ds, md = dataset_dir(model), model_dir(model)
    have = [pointer(d) for d in (ds, md) if pointer(d).is_file()]
    hint = _in_kit(f"make data_add_{model} SRC=/path/to/dataset MODEL_SRC=/path/to/checkpoint")
    if not have:
        if ds.is_dir() and md.is_dir():
            say(f"using {_rel(ds)} and {_rel(md)} as they are (no DVC pointers)")
            return
        raise KitError(f"no DVC pointer {_rel(pointer(ds))} for {model}; import the data once with "
                       f"`{hint}`, or run with DATA=synthetic")
    for d in (ds, md):
        if not pointer(d).is_file() and not d.is_dir():
            raise KitError(f"no DVC pointer {_rel(pointer(d))} and no {_rel(d)}; import it with `{hint}`")
    _pull(have, f"{model} data")


def pull_log(model: str) -> None:
    _bench(model)
    p = pointer(log_dir(model))
    if not p.is_file():
        raise KitError(f"no verified log for {model} yet ({_rel(p)} is missing); publish one with "
                       f"`{_in_kit(f'make publish_log_{model} RUN=/path/to/run_dir')}`")
    _pull([p], f"the verified {model} log")


# --------------------------------------------------------------------------- add / publish

def _install_dir(fill, dst: Path) -> None:
    """Build DST through `fill(tmp)` next to it, then swap it in: never a half-copied DST."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp, old = dst.with_name(f".{dst.name}.partial"), dst.with_name(f".{dst.name}.old")
    for leftover in (tmp, old):
        if leftover.exists():
            shutil.rmtree(leftover)
    try:
        fill(tmp)
        if dst.exists():
            os.replace(dst, old)
        os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # the half copy only; DST or its old copy stays
        if old.exists() and not dst.exists():
            os.replace(old, dst)
        raise
    if old.exists():
        shutil.rmtree(old)


def _copy_in(src: Path, dst: Path, name: str | None = None) -> None:
    """SRC (a dir) becomes DST; a file SRC becomes DST/NAME, the file the model reads in DST."""
    if src.resolve() == (dst / name if name and src.is_file() else dst).resolve():
        return  # already laid out where the kit reads it
    if src.is_file():
        def fill(tmp: Path) -> None:
            tmp.mkdir()
            shutil.copy2(src, tmp / name)
        _install_dir(fill, dst)
        return
    _install_dir(lambda tmp: shutil.copytree(src, tmp, symlinks=False), dst)


def checkpoint_name(bench) -> str | None:
    """The file a model whose checkpoint is one file reads in its checkpoint dir (its module's
    CHECKPOINT: resnet50.pth, rnnt.pt, ...); None where the checkpoint is a directory (HF layouts)."""
    name = getattr(sys.modules.get(type(bench).__module__), "CHECKPOINT", None)
    return name if isinstance(name, str) else None


def check_model_src(model: str, model_src: Path, bench=None) -> None:
    """MODEL_SRC is what --model_path accepts: the checkpoint dir, or the checkpoint file itself for a
    model whose checkpoint is one file. Checked before any env is built (no registry needed)."""
    if not model_src.exists():
        raise KitError(f"MODEL_SRC {model_src} does not exist; point it at the {model} checkpoint")
    if model_src.is_file() and bench is not None and checkpoint_name(bench) is None:
        raise KitError(f"MODEL_SRC {model_src} is a file, but the {model} checkpoint is a directory in its "
                       f"published layout; point MODEL_SRC at that directory")


def _add_and_push(dirs: list[Path], what: str) -> None:
    _dvc("add", *map(_rel, dirs), what=f"dvc add of {what}")
    pointers = [pointer(d) for d in dirs]
    _dvc("push", *map(_rel, pointers), what=f"pushing {what}")
    say(f"pushed {what} to remote '{REMOTE}'")
    print(f"commit the pointer(s): git add {' '.join(map(_rel, pointers))} && git commit -m '{what}'")


def validate_source(model: str, src: Path, model_src: Path | None) -> int:
    """The loader opens SRC, every sample file is there, sample 0 loads, the checkpoint is found."""
    bench = _bench(model)
    if not src.is_dir():
        raise KitError(f"SRC {src} is not a directory; point SRC at the {model} dataset dir")
    ds = bench.open_dataset(src)
    synth = read_synthetic(src)
    want = int(synth["n"]) if synth else bench.dataset_size
    if ds.size != want and (synth or ds.size not in bench.target_sizes.values()):
        kind = "its SYNTHETIC.json" if synth else "the MLPerf dataset-size"
        raise KitError(f"{src} holds {ds.size} samples but {kind} says {want}; import the complete set")
    ds.check_available(0, ds.size)
    ds.load(0)
    if model_src is not None:
        check_model_src(model, model_src, bench)
        bench.fingerprint(src, model_src)  # raises naming the expected checkpoint file
    return ds.size


def add(model: str, src: Path, model_src: Path | None = None) -> None:
    src = Path(src).resolve()
    model_src = Path(model_src).resolve() if model_src else None
    n = validate_source(model, src, model_src)
    _require_remote()
    dirs = [dataset_dir(model)] + ([model_dir(model)] if model_src else [])
    _copy_in(src, dirs[0])
    if model_src:
        _copy_in(model_src, dirs[1], checkpoint_name(_bench(model)))
    say(f"{model}: {n} samples{' + checkpoint' if model_src else ''} laid out in {', '.join(map(_rel, dirs))}")
    _add_and_push(dirs, f"{model} data")


def _check_publishable(model: str, run: Path, allow_synthetic: bool, allow_partial: bool) -> dict:
    acc_f = run / "accuracy.json"
    if not acc_f.is_file():
        raise KitError(f"{run} has no accuracy.json; finish the run and `{KIT_CLI} check {run}` first")
    try:
        acc = json.loads(acc_f.read_text())
    except ValueError:
        raise KitError(f"{acc_f} is corrupt; rerun `{KIT_CLI} check {run}`") from None
    if acc.get("model") != model:
        raise KitError(f"{run} is a {acc.get('model')} run, not {model}")
    if acc.get("verdict") != "PASS":
        raise KitError(f"{run} did not PASS its check (verdict {acc.get('verdict')}); only passing runs are "
                       f"published as verified logs")
    if acc.get("synthetic") and not allow_synthetic:
        raise KitError(f"{run} ran on synthetic data; publish real runs only (ALLOW_SYNTHETIC=1 to override)")
    if acc.get("partial") or acc.get("n_count", 0) < acc.get("dataset_size", 1):
        if not allow_partial:
            raise KitError(f"{run} covers {acc.get('n_count')} of {acc.get('dataset_size')} samples; publish "
                           f"full-dataset runs only (ALLOW_PARTIAL=1 to override)")
    # accuracy.json must describe the merged log next to it (check writes its sha256 into accuracy.txt).
    merged = run / "merged_mlperf_log_accuracy.json"
    txt = run / "accuracy.txt"
    if not merged.is_file() or not txt.is_file() or f"hash={sha256_file(merged)}" not in txt.read_text():
        raise KitError(f"{run}: accuracy.txt does not match {merged.name}; rerun `{KIT_CLI} check {run}`")
    return acc


def publish_log(model: str, run: Path, allow_synthetic: bool = False, allow_partial: bool = False) -> None:
    run = Path(run).resolve()
    if not run.is_dir():
        raise KitError(f"RUN {run} is not a run directory")
    _check_publishable(model, run, allow_synthetic, allow_partial)
    _require_remote()
    info = json.loads((run / "gather.json").read_text())

    def fill(tmp: Path) -> None:
        tmp.mkdir()
        for name in RUN_TOP_FILES:
            shutil.copy2(run / name, tmp / name)
        for part in info["partitions"]:  # partition dirs may live in other nodes' run dirs
            src = Path(part["dir"])
            if not src.is_dir():
                raise KitError(f"partition {part['partition']} dir {src} (from gather.json) is gone; "
                               f"publish from a run dir that still has it")
            shutil.copytree(src, tmp / str(part["partition"]), ignore=shutil.ignore_patterns(*PARTITION_SKIP))

    _install_dir(fill, log_dir(model))
    _add_and_push([log_dir(model)], f"verified {model} log")


# --------------------------------------------------------------------------- compare

def compare(run: Path, ref: Path) -> str:
    """Metric by metric: this run vs a reference (verified) run, from both accuracy.json."""
    def load(d: Path) -> dict:
        f = Path(d) / "accuracy.json"
        if not f.is_file():
            raise KitError(f"{d} has no accuracy.json; run `{KIT_CLI} check {d}` (or `make log_<model>` "
                           f"for a verified log) first")
        try:
            return json.loads(f.read_text())
        except ValueError:
            raise KitError(f"{f} is corrupt; rerun `{KIT_CLI} check {d}`") from None

    a, b = load(run), load(ref)
    if a.get("model") != b.get("model"):
        raise KitError(f"{run} is {a.get('model')} but {ref} is {b.get('model')}; compare runs of one model")
    from .targets import label  # RNN-T's checker metric "WER" is the accuracy: named as it is

    rows = [("metric", "run", "reference", "diff", "diff %")]
    for k in sorted(set(a["metrics"]) | set(b["metrics"])):
        x, y = a["metrics"].get(k), b["metrics"].get(k)
        if x is None or y is None:
            rows.append((label(k), _num(x), _num(y), "-", "-"))
            continue
        d = float(x) - float(y)
        rows.append((label(k), _num(x), _num(y), f"{d:+.6g}", f"{100.0 * d / float(y):+.4f}%" if y else "-"))
    w = [max(len(r[i]) for r in rows) for i in range(5)]
    fmt = "  ".join("{:<%d}" % n for n in w)

    def tag(x: dict) -> str:
        return f"{x.get('verdict')}, n={x.get('n_count')}{', SYNTHETIC' if x.get('synthetic') else ''}"
    lines = [f"{a['model']}: run {run} ({tag(a)}) vs reference {ref} ({tag(b)})", fmt.format(*rows[0]),
             "  ".join("-" * n for n in w)] + [fmt.format(*r) for r in rows[1:]]
    return "\n".join(ln.rstrip() for ln in lines)


def _num(x) -> str:
    return "-" if x is None else f"{float(x):.6g}"


# --------------------------------------------------------------------------- before any env

def _main(argv: list[str] | None = None) -> int:
    """`python3 -m evalkit.data remote URL [--endpoint E]`, `... preflight-pull MODEL` and `... preflight-add
    MODEL --src S [--model_src M]`: what make runs before (or instead of) building an env; stdlib only."""
    ap = argparse.ArgumentParser(prog="python3 -m evalkit.data")
    sub = ap.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("remote")
    q.add_argument("url")
    q.add_argument("--endpoint")
    q = sub.add_parser("preflight-pull")
    q.add_argument("model")
    q = sub.add_parser("preflight-add")
    q.add_argument("model")
    q.add_argument("--src", type=Path, required=True)
    q.add_argument("--model_src", type=Path)
    a = ap.parse_args(argv)
    try:
        if a.cmd == "remote":
            set_remote(a.url, a.endpoint)
        elif a.cmd == "preflight-pull":  # a pointer whose data is not here yet: the pull needs a remote
            if any(pointer(d).is_file() and not d.is_dir() for d in (dataset_dir(a.model), model_dir(a.model))):
                _require_remote()
        else:
            if not (ROOT / "envs" / f"{a.model}.yml").is_file():
                raise KitError(f"no model '{a.model}' (models: "
                               f"{' '.join(sorted(f.stem for f in (ROOT / 'scripts').glob('eval_*.sh')))})"
                               .replace("eval_", ""))
            if not a.src.is_dir():
                raise KitError(f"SRC {a.src} is not a directory; point SRC at the {a.model} dataset dir")
            if a.model_src is not None:
                check_model_src(a.model, a.model_src)
            _require_remote()
    except KitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_main())
