"""Real servers on 127.0.0.1 for tests and the load benchmark: gunicorn (gunicorn.conf.py,
wsgi.py), PostgreSQL 15 and moto's S3 server."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
START_S = 120
REQUEST_S = 120
STORE_S = 900  # the longest an upload's encode may take (slow, loaded CPUs) in `stored`


def local_path(url: str) -> str:
    """The path and query of a URL a server gave (to request it again on a local server)."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


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


class HttpEndpoint:
    """Requests to an HTTP server on 127.0.0.1:`port`, one fresh connection each."""

    port: int

    @property
    def url(self) -> str:
        """`http://127.0.0.1:<port>`."""
        return f"http://127.0.0.1:{self.port}"

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = REQUEST_S,
        source: str | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """One request on a fresh connection: status, headers, body. `source`: the local
        address to send from (any of 127.0.0.0/8: another client, to nginx's per-address limits).
        """
        address = (source, 0) if source else None
        connection = http.client.HTTPConnection(
            "127.0.0.1", self.port, timeout=timeout, source_address=address
        )
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

    def stored(self, status: int, body: Any, timeout: float = STORE_S) -> dict:
        """The image of a one-file upload answered `status` with `body`: from a 201, or by
        following the 202's status URL until it is stored; fails on any other answer."""
        assert status in (201, 202), (status, body)
        if status == 201:
            return body["images"][0]
        [job] = body["jobs"]
        path = local_path(job["status_url"])
        deadline = time.monotonic() + timeout
        while True:
            status, _, data = self.request("GET", path)
            if status != 202:
                assert status == 200, (status, data[:300])
                return json.loads(data)["image"]
            assert time.monotonic() < deadline, f"{path} still pending after {timeout:g} s"
            time.sleep(0.5)

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


class Gunicorn(HttpEndpoint):
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

    def cli(self, *args: str) -> str:
        """Run `latent-gallery ARGS` with this server's settings; its output."""
        command = [sys.executable, "-m", "webapp.cli", *args]
        result = subprocess.run(command, cwd=ROOT, env=self.env, capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f"latent-gallery {' '.join(args)}: {result.stderr}")
        return result.stdout

    def logs(self) -> str:
        """Everything gunicorn and the app logged so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def unavailable(message: str) -> None:
    """Skip a test whose server binary is missing, or fail when `LATENT_GALLERY_REQUIRE_SERVERS=1`
    (as CI sets, after installing them)."""
    import pytest

    if os.environ.get("LATENT_GALLERY_REQUIRE_SERVERS") == "1":
        pytest.fail(message + "; LATENT_GALLERY_REQUIRE_SERVERS=1 makes this an error")
    pytest.skip(message)


def spawn(
    command: list[str], log: Path, port: int, name: str, errors: Path | None = None
) -> subprocess.Popen:
    """Start a server in its own session, its output appended to `log`, and wait until it
    listens on `port` (a failure quotes `errors`, default `log`)."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    wait_for_port(port, process, name, errors or log)
    return process


def wait_for_port(port: int, process: subprocess.Popen, name: str, log: Path) -> None:
    """Wait until something accepts connections on 127.0.0.1:`port`; fail if `process` dies."""
    deadline = time.monotonic() + START_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{log.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} not listening within {START_S} s:\n{log.read_text()}")
        time.sleep(0.1)


class Postgres:
    """A throwaway PostgreSQL 15 cluster (Debian's binaries) on 127.0.0.1 and a random port.

    PostgreSQL refuses to run as root, so as root `initdb` and `pg_ctl` run through
    `runuser -u postgres`, on a temp folder that user owns (its unix socket is there too).
    """

    BIN = Path("/usr/lib/postgresql/15/bin")
    USER = "postgres"

    def __init__(self) -> None:
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="latent-gallery-pg-"))
        self.log = self.folder / "postgres.log"

    @classmethod
    def missing(cls) -> str | None:
        """Why no cluster can be started here, or None."""
        if not (cls.BIN / "initdb").exists():
            return f"PostgreSQL 15 is not installed ({cls.BIN}/initdb; apt-get install postgresql)"
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(cls.USER)
            except KeyError:
                return f"no {cls.USER!r} user to run PostgreSQL as (it refuses root)"
        return None

    def start(self) -> Postgres:
        """initdb (trust auth, no fsync) and start; returns once it accepts connections."""
        if os.geteuid() == 0:
            shutil.chown(self.folder, self.USER, self.USER)
        data = self.folder / "data"
        self._run("initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-sync", "--no-instructions")  # fmt: skip
        options = f"-h 127.0.0.1 -p {self.port} -k {self.folder} -F"
        self._run("pg_ctl", "-D", data, "-l", self.log, "-o", options, "-w", "start")
        return self

    def stop(self) -> None:
        """Stop at once and remove the cluster."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run("pg_ctl", "-D", self.folder / "data", "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        """A `postgresql://` URL of a database on this server."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create an empty database; its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def _run(self, program: str, *args: str | Path) -> None:
        command = [str(self.BIN / program), *map(str, args)]
        if os.geteuid() == 0:
            command = ["runuser", "-u", self.USER, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=START_S)
        if result.returncode:
            log = self.log.read_text() if self.log.exists() else ""
            raise subprocess.CalledProcessError(
                result.returncode, command, result.stdout, f"{result.stderr}\n{log}"
            )


class MotoS3:
    """moto's S3 server (`python -m moto.server`) on 127.0.0.1 and a random port; `env` holds
    the standard AWS variables that point plain boto3 at it."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.log = Path(log)
        self.process: subprocess.Popen | None = None
        self.env = {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{self.port}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def start(self) -> MotoS3:
        """Start and wait until it listens."""
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        self.process = spawn(command, self.log, self.port, "moto_server")
        return self

    def stop(self) -> None:
        """Stop the server (its buckets are in memory and go with it)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def client(self) -> Any:
        """A boto3 S3 client of this server."""
        import boto3

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.env["AWS_ENDPOINT_URL"],
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
            region_name=self.env["AWS_DEFAULT_REGION"],
        )

    def create_bucket(self, name: str) -> str:
        """Create an empty bucket; its name."""
        self.client().create_bucket(Bucket=name)
        return name


class Redis:
    """A throwaway `redis-server` (Debian's) on 127.0.0.1 and a random port, nothing on disk."""

    BINARY = "redis-server"

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.log = Path(log)
        self.process: subprocess.Popen | None = None

    @classmethod
    def missing(cls) -> str | None:
        """Why no server can be started here, or None."""
        if binary(cls.BINARY) is None:
            return f"{cls.BINARY} is not installed (apt-get install redis-server)"
        return None

    @property
    def url(self) -> str:
        """`redis://127.0.0.1:<port>/0`."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Redis:
        """Start and wait until it listens."""
        command = [binary(self.BINARY), "--bind", "127.0.0.1", "--port", str(self.port),
                   "--save", "", "--appendonly", "no", "--dir", str(self.log.parent)]  # fmt: skip
        self.process = spawn(command, self.log, self.port, self.BINARY)
        return self

    def stop(self) -> None:
        """Stop the server (its data is in memory and goes with it)."""
        _terminate(self.process)


class Nginx(HttpEndpoint):
    """Debian's nginx in the foreground with `deploy/nginx.conf` in front of `nodes`
    (`host:port`), on 127.0.0.1 and a random port; pid, logs and temp folders in `folder`."""

    BINARY = "nginx"
    CONFIG = ROOT / "deploy" / "nginx.conf"

    def __init__(self, folder: Path, nodes: list[str]) -> None:
        self.folder = Path(folder)
        self.port = free_port()
        self.nodes = nodes
        self.log = self.folder / "error.log"
        self.process: subprocess.Popen | None = None

    @classmethod
    def missing(cls) -> str | None:
        """Why nginx cannot be started here, or None."""
        if binary(cls.BINARY) is None:
            return f"{cls.BINARY} is not installed (apt-get install nginx)"
        return None

    def start(self) -> Nginx:
        """Write the config beside its node and listen files, start, wait until it listens."""
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / self.CONFIG.name
        shutil.copy(self.CONFIG, config)
        servers = "".join(f"server {node} max_fails=1 fail_timeout=10s;\n" for node in self.nodes)
        (self.folder / "gallery-nodes.conf").write_text(servers)
        (self.folder / "gallery-listen.conf").write_text(f"listen 127.0.0.1:{self.port};\n")
        command = [binary(self.BINARY), "-p", f"{self.folder}/", "-c", str(config),
                   "-e", str(self.log), "-g", "daemon off;"]  # fmt: skip
        self.process = spawn(command, self.folder / "nginx.out", self.port, self.BINARY, self.log)
        return self

    def stop(self) -> None:
        """Stop nginx (SIGTERM: fast shutdown)."""
        _terminate(self.process)


def binary(name: str) -> str | None:
    """The path of the program `name` on PATH or in /usr/sbin (Debian's nginx), or None."""
    return shutil.which(name, path=f"{os.environ.get('PATH', '')}{os.pathsep}/usr/sbin")


def _terminate(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
