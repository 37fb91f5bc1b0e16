"""A real gunicorn (gunicorn.conf.py, wsgi.py) on 127.0.0.1 for tests and the load benchmark."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
START_S = 120
REQUEST_S = 120


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def multipart(files: list[tuple[bytes, str]], field: str = "file") -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body with each (content, filename) as `field`, and its headers."""
    boundary = secrets.token_hex(16)
    parts = [
        (
            f"--{boundary}\r\nContent-Disposition: form-data; "
            f'name="{field}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + content
        + b"\r\n"
        for content, filename in files
    ]
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


class Gunicorn:
    """One gunicorn process group serving the app from `data`, its output in `log`.

    `env` adds `LATENT_GALLERY_*` settings (weights, limits) to this process's environment.
    """

    def __init__(self, data: Path, log: Path, env: Mapping[str, str] | None = None) -> None:
        self.data = Path(data)
        self.log = Path(log)
        self.port = free_port()
        self.env = {
            **os.environ,
            "LATENT_GALLERY_BIND": f"127.0.0.1:{self.port}",
            "LATENT_GALLERY_DATA": str(self.data),
            **(env or {}),
        }
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """`http://127.0.0.1:<port>`."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, healthy: bool = True, timeout: float = START_S) -> Gunicorn:
        """Start and wait until `/healthz` answers 200 (`healthy`) or answers at all."""
        command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                code = self.process.returncode
                raise RuntimeError(f"gunicorn exited with {code}:\n{self.logs()}")
            try:
                status = self.request("GET", "/healthz", timeout=5)[0]
                if status == 200 or not healthy:
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn not ready within {timeout:g} s:\n{self.logs()}")
            time.sleep(0.25)

    def stop(self) -> None:
        """SIGTERM (graceful), then SIGKILL if it has not exited within 30 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """`kill -9` the master and its workers at once (the whole process group)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def worker_pid(self) -> int:
        """The pid of the (single) worker process, the one that loads the model and serves."""
        assert self.process is not None
        task = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        children = task.read_text().split()
        if len(children) != 1:
            raise RuntimeError(f"expected one gunicorn worker, found {children}")
        return int(children[0])

    def logs(self) -> str:
        """Everything gunicorn and the app logged so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = REQUEST_S,
    ) -> tuple[int, dict[str, str], bytes]:
        """One request on a fresh connection: status, headers, body."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=dict(headers or {}))
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def upload(self, content: bytes, filename: str, timeout: float = REQUEST_S) -> tuple[int, Any]:
        """POST one file to /api/images: status and the JSON body."""
        body, headers = multipart([(content, filename)])
        status, _, data = self.request("POST", "/api/images", body, headers, timeout)
        return status, json.loads(data)

    def listed_ids(self) -> list[str]:
        """Every image id /api/images lists, newest first (all pages)."""
        ids, path = [], "/api/images?limit=100"
        while path:
            status, _, data = self.request("GET", path)
            if status != 200:
                raise RuntimeError(f"GET {path}: {status} {data[:200]!r}")
            page = json.loads(data)
            ids += [image["id"] for image in page["images"]]
            cursor = page["next_cursor"]
            path = f"/api/images?limit=100&cursor={cursor}" if cursor else ""
        return ids
