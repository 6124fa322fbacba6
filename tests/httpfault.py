"""A small fault-injecting HTTP server for download tests.

Serves on 127.0.0.1 at an ephemeral port from a background thread; routes are registered per
path (query strings are ignored when matching). Each route may carry a list of faults that are
consumed one per request, in order:

* ``("status", code)``: answer with that HTTP status and an empty body;
* ``("drop", n)``: send the headers (full Content-Length) and ``n`` body bytes, then close;
* ``("stall", n, seconds)``: send ``n`` body bytes, sleep, then close.

Every request is recorded in ``server.hits`` (path, headers with lower-case names, status, body
bytes sent), so tests can assert on Range and Authorization headers and on bytes transferred.

    with FaultServer() as srv:
        srv.add_file("/f.bin", data, faults=[("status", 503)])
        url = srv.url("/f.bin")
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Route:
    data: bytes | None = None
    content_type: str = "application/octet-stream"
    faults: list = field(default_factory=list)
    ignore_range: bool = False
    auth: tuple[str, str] | None = None
    redirect: str | None = None
    redirect_code: int = 302
    headers: dict = field(default_factory=dict)  # extra response headers (e.g. Link for paged listings)


@dataclass
class Hit:
    path: str
    headers: dict
    status: int = 0
    sent: int = 0


class FaultServer:
    def __init__(self, host: str = "127.0.0.1"):
        self.routes: dict[str, Route] = {}
        self.hits: list[Hit] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer((host, 0), _make_handler(self))
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    # lifecycle -----------------------------------------------------------------------------
    def start(self) -> "FaultServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "FaultServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # routes --------------------------------------------------------------------------------
    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def add_file(self, path: str, data: bytes, *, faults=(), ignore_range: bool = False,
                 auth: tuple[str, str] | None = None) -> str:
        self.routes[path] = Route(data=data, faults=list(faults), ignore_range=ignore_range, auth=auth)
        return self.url(path)

    def add_json(self, path: str, obj, *, faults=(), headers: dict | None = None) -> str:
        self.routes[path] = Route(data=json.dumps(obj).encode(), content_type="application/json",
                                  faults=list(faults), headers=dict(headers or {}))
        return self.url(path)

    def add_redirect(self, path: str, location: str, *, code: int = 302,
                     auth: tuple[str, str] | None = None) -> str:
        self.routes[path] = Route(redirect=location, redirect_code=code, auth=auth)
        return self.url(path)

    # inspection ----------------------------------------------------------------------------
    def hits_for(self, path: str) -> list[Hit]:
        with self.lock:
            return [h for h in self.hits if h.path == path]

    def bytes_sent(self, path: str) -> int:
        return sum(h.sent for h in self.hits_for(path))


def _make_handler(server: FaultServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def _empty(self, hit: Hit, code: int, headers: dict | None = None) -> None:
            hit.status = code
            self.send_response(code)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            hit = Hit(path=path, headers={k.lower(): v for k, v in self.headers.items()})
            with server.lock:
                server.hits.append(hit)
                route = server.routes.get(path)
                fault = route.faults.pop(0) if route is not None and route.faults else None
            if route is None:
                return self._empty(hit, 404)
            if route.auth is not None:
                token = base64.b64encode(f"{route.auth[0]}:{route.auth[1]}".encode()).decode()
                if self.headers.get("Authorization") != f"Basic {token}":
                    return self._empty(hit, 401, {"WWW-Authenticate": 'Basic realm="test"'})
            if fault is not None and fault[0] == "status":
                return self._empty(hit, fault[1])
            if route.redirect is not None:
                return self._empty(hit, route.redirect_code, {"Location": route.redirect})

            data = route.data or b""
            status, body, extra = 200, data, {}
            rng = self.headers.get("Range")
            if rng and not route.ignore_range and rng.startswith("bytes="):
                start = int(rng[len("bytes="):].split("-", 1)[0])
                if start >= len(data):
                    return self._empty(hit, 416, {"Content-Range": f"bytes */{len(data)}"})
                status, body = 206, data[start:]
                extra["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            hit.status = status
            self.send_response(status)
            self.send_header("Content-Type", route.content_type)
            self.send_header("Content-Length", str(len(body)))
            for k, v in {**route.headers, **extra}.items():
                self.send_header(k, v)
            self.end_headers()

            limit = len(body)
            pause = 0.0
            if fault is not None and fault[0] in ("drop", "stall"):
                limit = min(limit, fault[1])
                pause = fault[2] if fault[0] == "stall" else 0.0
            try:
                for i in range(0, limit, 65536):
                    piece = body[i:min(i + 65536, limit)]
                    self.wfile.write(piece)
                    hit.sent += len(piece)
                self.wfile.flush()
                if pause:
                    time.sleep(pause)
            except (BrokenPipeError, ConnectionResetError):
                pass
            self.close_connection = True

    return Handler
