"""Bounded rendezvous: every wait ends by one deadline, with one error line naming the address.

Why not torch's TCPStore timeout alone: its client retries a failed connect once more after the
timeout (plus a backoff), so timeout=300 gave up only after 10 min 44 s, and an address that does
not resolve is retried the same way. So nothing here connects a TCPStore before a plain socket,
under the deadline, has reached the address.

Two users:
* the kit's ranks (distributed._Ranks): `reach()` before connecting the store;
* the scripts, once per node before torchrun (`python -m evalkit.rendezvous`): `meet()` checks that
  every node is up and reaches node 0 at MASTER_ADDR:MASTER_PORT within INIT_TIMEOUT, over plain
  TCP on that port. Node 0 closes the port before its torchrun serves the store there; the other
  nodes' torchrun then finds a head that is known to be up.
"""
from __future__ import annotations

import argparse
import socket
import sys
import threading
import time

from .errors import KitError

HELLO = "evalkit-node"


def _resolve(host: str, port: int, left: float) -> list:
    """getaddrinfo with a bound: a resolver can hang far longer than the deadline."""
    box: dict = {}

    def go():
        try:
            box["v"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as e:
            box["e"] = e
    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(max(left, 0.01))
    if t.is_alive():
        raise TimeoutError(f"resolving {host} timed out")
    if "e" in box:
        raise box["e"]
    return box["v"]


def _why(e: OSError, host: str) -> str:
    if isinstance(e, socket.gaierror):
        return f"{host}: {e.strerror}"
    if isinstance(e, (TimeoutError, socket.timeout)):
        return str(e) if str(e) and str(e) != "timed out" else "connect timed out"
    return (e.strerror or str(e) or type(e).__name__).lower()


def _connect(host: str, port: int, deadline: float) -> tuple[socket.socket | None, str]:
    """A connected socket, or (None, why the last try failed) once the deadline passed."""
    why = "no answer"
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None, why
        try:
            for family, kind, proto, _, addr in _resolve(host, port, left):
                s = socket.socket(family, kind, proto)
                s.settimeout(max(min(deadline - time.monotonic(), 2.0), 0.01))
                try:
                    s.connect(addr)
                    return s, ""
                except OSError as e:
                    s.close()
                    why = _why(e, host)
        except OSError as e:
            why = _why(e, host)
        time.sleep(max(min(0.5, deadline - time.monotonic()), 0))


def hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _unreachable(who: str, host: str, port: int, limit: str, why: str) -> KitError:
    return KitError(f"{who}: cannot reach the rendezvous at {hostport(host, port)} within {limit} ({why}); "
                    f"check MASTER_ADDR/MASTER_PORT and that node 0 started")


def reach(host: str, port: int, deadline: float, who: str, limit: str) -> None:
    """Return once host:port accepts a TCP connection; KitError at the deadline."""
    s, why = _connect(host, port, deadline)
    if s is None:
        raise _unreachable(who, host, port, limit, why)
    s.close()


def _line(s: socket.socket, deadline: float) -> str | None:
    """One line from s before the deadline; None on timeout or EOF."""
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        s.settimeout(left)
        try:
            chunk = s.recv(256)
        except OSError:
            return None
        if not chunk:
            return None
        buf += chunk
        if len(buf) > 4096:
            return None
    return buf.split(b"\n", 1)[0].decode(errors="replace")


def meet(addr: str, port: int, nnodes: int, node_rank: int, timeout: float) -> None:
    """Every node of the run checks in at node 0 (addr:port) within timeout seconds, or fails."""
    if nnodes <= 1:
        return
    deadline = time.monotonic() + timeout
    limit = f"INIT_TIMEOUT {timeout:g} s"
    where = hostport(addr, port)
    if node_rank == 0:
        _serve(addr, port, nnodes, deadline, limit)
        return
    s, why = _connect(addr, port, deadline)
    if s is None:
        raise _unreachable(f"node {node_rank}", addr, port, limit, why)
    with s:
        try:
            s.sendall(f"{HELLO} {node_rank} {nnodes}\n".encode())
        except OSError as e:
            raise KitError(f"node {node_rank}: lost the rendezvous at {where}: {_why(e, addr)}") from None
        reply = _line(s, deadline)
    if reply == "go":
        return
    if reply and reply.startswith("error "):
        raise KitError(f"node {node_rank}: node 0 at {where} ended the rendezvous: {reply[6:]}")
    if reply is None:
        raise KitError(f"node {node_rank}: reached {where}, but not every one of {nnodes} nodes joined within "
                       f"{limit}; check that every node started")
    raise KitError(f"node {node_rank}: {where} is not an evalkit rendezvous (it answered {reply[:60]!r}); "
                   f"check MASTER_PORT")


def _serve(addr: str, port: int, nnodes: int, deadline: float, limit: str) -> None:
    where = hostport(addr, port)
    try:
        if socket.has_dualstack_ipv6():
            srv = socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True)
        else:
            srv = socket.create_server(("", port))
    except OSError as e:
        raise KitError(f"node 0: cannot serve the rendezvous on port {port} ({_why(e, addr)}); another job "
                       f"may hold it: set MASTER_PORT") from None
    nodes: dict[int, socket.socket] = {}
    told: list[socket.socket] = []   # every node that checked in, to hear the outcome
    try:
        with srv:
            error = None
            while len(nodes) < nnodes - 1 and error is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = [r for r in range(1, nnodes) if r not in nodes]
                    error = (f"{len(nodes) + 1} of {nnodes} nodes reached the rendezvous at {where} within "
                             f"{limit} (missing node {', '.join(map(str, missing))}); check that every node "
                             f"started and reaches {where}")
                    break
                srv.settimeout(min(left, 1.0))
                try:
                    c, _ = srv.accept()
                except OSError:
                    continue
                hello = (_line(c, min(deadline, time.monotonic() + 10)) or "").split()
                if len(hello) != 3 or hello[0] != HELLO or not all(x.isdigit() for x in hello[1:]):
                    c.close()   # not one of ours (a port scan, a stray client): ignore it
                    continue
                told.append(c)
                r, n = int(hello[1]), int(hello[2])
                if n != nnodes:
                    error = f"node {r} has NNODES={n}, node 0 has {nnodes}: set the same NNODES on every node"
                elif r in nodes:
                    error = f"two nodes have NODE_RANK={r}"
                elif not 0 < r < nnodes:
                    error = f"a node has NODE_RANK={r}, not one of 1..{nnodes - 1}"
                else:
                    nodes[r] = c
            for c in told:
                try:
                    c.sendall(b"go\n" if error is None else f"error {error}\n".encode())
                except OSError:
                    pass
            # Let the other nodes close first, so no TIME_WAIT holds the port torchrun binds next.
            for c in told:
                _line(c, time.monotonic() + 2)
        if error is not None:
            raise KitError(f"node 0: {error}")
    finally:
        for c in told:
            c.close()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m evalkit.rendezvous",
                                description="the scripts' per-node check-in before torchrun")
    p.add_argument("--addr", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--nnodes", type=int, required=True)
    p.add_argument("--node_rank", type=int, required=True)
    p.add_argument("--timeout", type=float, required=True)
    a = p.parse_args(argv)
    try:
        meet(a.addr, a.port, a.nnodes, a.node_rank, a.timeout)
    except KitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
