"""A real S3-compatible server for the DVC tests: moto_server on 127.0.0.1, auth on.

moto checks signatures against its own IAM only after auth is switched on, so
the server starts open, we create an IAM user + access key + bucket through
it with boto3, then POST /moto-api/reset-auth 0: from there on every request
must be signed by that key, and a wrong key is refused (403).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.request import Request, urlopen

BUCKET = "mlperf-test"
POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class S3Server:
    proc: subprocess.Popen
    endpoint: str
    key_id: str
    secret: str

    @property
    def creds(self) -> dict:
        return {"AWS_ACCESS_KEY_ID": self.key_id, "AWS_SECRET_ACCESS_KEY": self.secret,
                "AWS_DEFAULT_REGION": "us-east-1"}

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def start(log: Path) -> S3Server:
    import boto3  # dev env only (moto[server] brings it)

    port = free_port()
    exe = Path(sys.executable).with_name("moto_server")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with open(log, "w") as f:
        proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=f, stderr=subprocess.STDOUT,
                                env=env)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError(f"moto_server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
    try:
        boot = {"endpoint_url": endpoint, "region_name": "us-east-1",
                "aws_access_key_id": "bootstrap", "aws_secret_access_key": "bootstrap"}
        iam = boto3.client("iam", **boot)
        iam.create_user(UserName="evalkit")
        iam.put_user_policy(UserName="evalkit", PolicyName="all", PolicyDocument=json.dumps(POLICY))
        key = iam.create_access_key(UserName="evalkit")["AccessKey"]
        boto3.client("s3", **boot).create_bucket(Bucket=BUCKET)
        # text/plain: a form content type would make moto read an empty body
        urlopen(Request(f"{endpoint}/moto-api/reset-auth", data=b"0", method="POST",
                        headers={"Content-Type": "text/plain"}), timeout=10).read()
    except BaseException:
        proc.kill()
        raise
    return S3Server(proc, endpoint, key["AccessKeyId"], key["SecretAccessKey"])
