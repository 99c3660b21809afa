"""A real S3-compatible server on 127.0.0.1 for the tests and the benchmark: SeaweedFS `weed mini`.

Every port is chosen free and passed explicitly, so test runs can sit side by side; a fresh data
directory per start (SeaweedFS remembers its options there). SigV4 is enforced with one identity.
docs/testing.md says why SeaweedFS, and what to know about it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import free_port

ACCESS_KEY, SECRET_KEY = "AKIDTESTKEY123", "SECRETtestKEY1234567890"
BUCKET = "ckpt"
# A second identity, allowed only under SCOPED_PREFIX: an IAM policy scoped to one workload.
SCOPED_ACCESS_KEY, SCOPED_SECRET_KEY = "AKIDSCOPEDKEY456", "SECRETscopedKEY0987654321"
SCOPED_PREFIX = "scoped/ns/app"
_PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
          "volume.port.public", "filer.port", "filer.port.grpc", "filer.port.public",
          "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc", "webdav.port", "debug.port")


class S3Server:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.ports = {name: free_port() for name in _PORTS}
        self.endpoint = f"http://127.0.0.1:{self.ports['s3.port']}"
        self.proc: subprocess.Popen | None = None

    @property
    def env(self) -> dict[str, str]:
        """What a client needs, as the usual AWS variables."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": "us-east-1"}

    def client(self, endpoint: str | None = None):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=endpoint or self.endpoint, region_name="us-east-1",
                            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                            config=Config(s3={"addressing_style": "path"}))

    def start(self, timeout: float = 60) -> "S3Server":
        weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
        data, logs = self.workdir / "data", self.workdir / "logs"
        data.mkdir(parents=True)
        logs.mkdir()
        config = self.workdir / "s3.json"
        scoped = f"{BUCKET}/{SCOPED_PREFIX}/*"
        config.write_text(json.dumps({"identities": [{
            "name": "tester",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"]}, {
            "name": "scoped",
            "credentials": [{"accessKey": SCOPED_ACCESS_KEY, "secretKey": SCOPED_SECRET_KEY}],
            "actions": [f"Read:{scoped}", f"List:{scoped}", f"Write:{scoped}"]}]}))
        args = [weed, f"-logdir={logs}", "mini", f"-dir={data}", "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1", "-master.telemetry=false", "-webdav=false",
                "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
                f"-s3.config={config}", f"-bucket={BUCKET}"]
        args += [f"-{name}={port}" for name, port in self.ports.items()]
        self.proc = subprocess.Popen(args, stdout=open(logs / "stdout", "wb"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        client = self.client()
        while True:
            try:
                if any(b["Name"] == BUCKET for b in client.list_buckets()["Buckets"]):
                    return self
            except Exception:  # noqa: BLE001  (anything, until it answers or the time is up)
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = (logs / "stdout").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"SeaweedFS did not become ready:\n{tail}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
