"""A small HTTP client of the API on the standard library (keep-alive, JSON, multipart uploads), and a
background uvicorn server, for the tests and ``python -m benchmarks api``.

>>> with BackgroundServer(create_app("my-lake")) as server:
...     client = ApiClient(server.url)
...     client.get("/health").json()["status"]
'ok'
"""
from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Reply:
    """One HTTP answer: status, headers (lower-case names), body bytes."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body and its Content-Type: ``files`` maps field -> (file name, content)."""
    boundary = uuid.uuid4().hex
    parts: list[bytes] = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, content) in files.items():
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n").encode()
        parts.append(head + content + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class ApiClient:
    """One keep-alive connection to the API (not thread-safe: one client per thread)."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 60.0) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.api_key = api_key
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, *, body: bytes | None = None, json_body: Any = None,
                headers: dict[str, str] | None = None, chunked: bool = False) -> Reply:
        """Send one request; ``chunked`` sends the body without a Content-Length."""
        hdrs = dict(headers or {})
        if self.api_key is not None:
            hdrs.setdefault("X-API-Key", self.api_key)
        if json_body is not None:
            body = json.dumps(json_body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        for attempt in (1, 2):  # a keep-alive connection the server closed: reconnect once
            conn = self._conn or http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._conn = conn
            try:
                if chunked:
                    conn.request(method, path, body=iter([body or b""]), headers=hdrs, encode_chunked=True)
                else:
                    conn.request(method, path, body=body, headers=hdrs)
                resp = conn.getresponse()
                data = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if attempt == 2:
                    raise
                continue
            if resp.getheader("connection", "").lower() == "close":
                self.close()
            return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
        raise RuntimeError("unreachable")

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Reply:
        return self.request("POST", path, **kw)

    def upload(self, path: str, filename: str, content: bytes, **fields: str) -> Reply:
        body, ctype = multipart(fields, {"file": (filename, content)})
        return self.request("POST", path, body=body, headers={"Content-Type": ctype})

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class BackgroundServer:
    """A real uvicorn server for ``app`` on a free loopback port, in a background thread."""

    def __init__(self, app: Any, *, host: str = "127.0.0.1", log_level: str = "warning",
                 start_timeout: float = 120.0) -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.host, self.port = self.sock.getsockname()[:2]
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=self.port, log_level=log_level,
                                                    timeout_keep_alive=30))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True,
                                       name="uvicorn")
        self.start_timeout = start_timeout

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "BackgroundServer":
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the API server stopped while starting (see the log)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the API server did not start within {self.start_timeout:g} s")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


__all__ = ["ApiClient", "BackgroundServer", "Reply", "multipart"]
