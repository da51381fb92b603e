"""``--serve [HOST:]PORT``: watch the annotated frames in a browser.

Routes: ``/`` a small page, ``/stream.mjpg`` an MJPEG stream (``multipart/x-mixed-replace``),
``/frame.jpg`` the latest frame, ``/stats`` JSON (fps, latency, frames, drops, reconnects
per source), ``/metrics`` the same figures for Prometheus and ``/healthz`` (200 while every
source is healthy, 503 naming those that are not; :mod:`streamseg.serve.metrics`); ``POST /prompt`` and
``POST /point`` reach the model through :mod:`streamseg.serve.control`. The pictures come from a
:class:`~streamseg.serve.pictures.Pictures` (a run's :class:`~streamseg.serve.pictures.LiveFrames` sink, or a
fleet's relay): this module is HTTP only. :class:`PreviewServer` is a run's live view: the server and the sink
that feeds it, as one sink.

Binds 127.0.0.1 unless a host is given. Any other host needs a token (one is made up and printed
once when none is given), and then every request must carry it (``?token=...`` or
``Authorization: Bearer ...``). Requests must name this server in their ``Host`` header (an IP
address, ``localhost``, or a name given with ``--serve-host``), so that a web page cannot reach it
through a DNS name rebound to 127.0.0.1. Connections are bounded (``max_connections``; more get 503)
and idle or slow ones time out (``idle_timeout``). Nothing here ever shows a traceback or the token
in a log line.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import secrets
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from streamseg.errors import InputError, OutputError, redact
from streamseg.frames import Frame
from streamseg.pipeline.stats import Snapshot
from streamseg.roles import PointControl, PromptControl, SinkBase

from .control import Controls
from .page import page
from .pictures import LiveFrames, Pictures

log = logging.getLogger(__name__)

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
MAX_BODY = 8192  # bytes a POST body may hold


def parse_address(text: str) -> tuple[str, int]:
    """``"8080"`` -> ``("127.0.0.1", 8080)``; ``"0.0.0.0:8080"``, ``"[::1]:8080"`` -> host and port."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        raise InputError(f"invalid --serve {text!r}: expected [HOST:]PORT, e.g. 8080 or 0.0.0.0:8080") from None
    if not 0 <= number <= 65535:
        raise InputError(f"invalid --serve port {number}: expected 0..65535")
    return host, number


class _Server(ThreadingHTTPServer):
    """A thread per connection, at most ``max_connections`` at once; errors logged at debug, never printed."""

    daemon_threads = True
    request_queue_size = 128  # the standard 5 makes a burst of viewers wait a second for a retried SYN

    def __init__(self, address: tuple[str, int], handler: type, *, max_connections: int) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            try:
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address) -> None:
        log.debug("serve: error on a connection from %s", client_address[0], exc_info=True)


class LiveServer:
    """The live view's HTTP server, on its own threads: the page, the pictures of ``pictures``, the figures of
    ``stats`` and the model's ``controls``, to requests whose Host names it and that carry the token.

    ``token_generated`` is true when no token was given for a non-local address and one was made up:
    the caller shows it once.
    """

    def __init__(self, address: str, pictures: Pictures, *, token: str | None = None,
                 stats: Callable[[], Snapshot] | None = None, controls: Controls | None = None,
                 hosts: tuple[str, ...] = (), max_connections: int = 64, idle_timeout: float = 10.0) -> None:
        host, port = parse_address(address)
        self.pictures = pictures
        self.token_generated = host not in LOCAL_HOSTS and not token
        self.token = secrets.token_urlsafe(16) if self.token_generated else token
        self.stats = stats or Snapshot
        self.controls = controls or Controls()
        self.idle_timeout = idle_timeout
        self._lock = threading.Lock()
        self.viewers = 0
        self._closing = False
        try:
            self._server = _Server((host, port), _handler_for(self), max_connections=max_connections)
        except OSError as exc:
            raise OutputError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from exc
        bound_host, bound_port = self._server.server_address[:2]
        self._hosts = _allowed_hosts(bound_host, hosts)
        self.url = f"http://{'[' + bound_host + ']' if ':' in bound_host else bound_host}:{bound_port}/"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="streamseg-serve", daemon=True)
        self._thread.start()
        self._closed = False
        log.debug("live view serving on %s", self.url)  # the CLI prints the URL for the user

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def host_allowed(self, header: str | None) -> bool:
        """Whether a request's ``Host`` names this server (none at all: an HTTP/1.0 client, not a browser)."""
        if not header:
            return True
        name = header.strip().lower()
        if name.startswith("["):  # [v6]:port
            name = name[1:].split("]", 1)[0]
        elif name.count(":") == 1:
            name = name.split(":", 1)[0]
        try:
            ip = ipaddress.ip_address(name)
        except ValueError:
            return name in self._hosts  # a name: only localhost and --serve-host names
        return "*" in self._hosts or ip.is_loopback or str(ip) in self._hosts

    def origin_allowed(self, header: str | None) -> bool:
        """Whether a request's ``Origin`` (a browser sends it with every POST) is a page of this server; none at all:
        not a browser's cross-site request (curl, scripts)."""
        if header is None:
            return True
        try:
            origin = urlparse(header.strip())
        except ValueError:
            return False
        return origin.scheme in ("http", "https") and bool(origin.netloc) and self.host_allowed(origin.netloc)

    def authorised(self, handler: BaseHTTPRequestHandler, query: dict) -> bool:
        if not self.token:
            return True
        given = (query.get("token") or [""])[0]
        auth = handler.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            given = given or auth[7:]
        return hmac.compare_digest(given.encode(), self.token.encode())

    @property
    def closing(self) -> bool:
        return self._closing

    def viewer(self, delta: int) -> None:
        with self._lock:
            self.viewers += delta

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._closing = True
        self.pictures.wake()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=2)


class PreviewServer(SinkBase):
    """A run's live view (``--serve``): a :class:`LiveServer` showing what the render thread writes to this sink
    (:class:`~streamseg.serve.pictures.LiveFrames`). ``prompts`` and ``points``: the model's controls, if it has
    them (POST /prompt, POST /point)."""

    def __init__(self, address: str, *, token: str | None = None, quality: int = 80,
                 stats: Callable[[], Snapshot] | None = None, sources: int = 1, hosts: tuple[str, ...] = (),
                 prompts: PromptControl | None = None, points: PointControl | None = None,
                 max_connections: int = 64, idle_timeout: float = 10.0) -> None:
        self.frames = LiveFrames(sources=sources, quality=quality)
        controls = Controls(prompts=prompts, points=points, sources=sources)
        self.server = LiveServer(address, self.frames, token=token, stats=stats, controls=controls,
                                 hosts=hosts, max_connections=max_connections, idle_timeout=idle_timeout)
        self.url, self.token, self.token_generated = self.server.url, self.server.token, self.server.token_generated

    def write(self, frame: Frame) -> None:
        self.frames.write(frame)

    def close(self) -> None:
        self.frames.close()
        self.server.close()

    @property
    def stats(self) -> Callable[[], Snapshot]:
        return self.server.stats

    @stats.setter
    def stats(self, value: Callable[[], Snapshot]) -> None:
        self.server.stats = value

    @property
    def viewers(self) -> int:
        return self.server.viewers

    @property
    def frames_encoded(self) -> int:
        return self.frames.frames_encoded


def _allowed_hosts(bound: str, names: tuple[str, ...]) -> frozenset[str]:
    """The Host names a request may give: localhost, the --serve-host names, the bound address; ``*`` stands
    for any IP address when the server listens on all of them (an IP literal cannot be a rebound name)."""
    hosts = {"localhost", *(n.strip().lower() for n in names if n.strip())}
    hosts.add("*" if bound in ("0.0.0.0", "::") else bound)
    return frozenset(hosts)


def _handler_for(server: LiveServer) -> type[BaseHTTPRequestHandler]:
    pictures, controls = server.pictures, server.controls

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "streamseg"
        timeout = server.idle_timeout  # idle connections and slow headers end after this (socket timeout)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
            log.debug("serve: %s", redact(format % args))  # the request line may hold ?token=

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - the base class's name
            self._guarded(self._get)

        def do_POST(self) -> None:  # noqa: N802 - the base class's name
            self._guarded(self._post)

        def _guarded(self, handle) -> None:
            try:
                handle()
            except (BrokenPipeError, ConnectionResetError, TimeoutError):  # the viewer went away or stalled
                self.close_connection = True
            except Exception:  # noqa: BLE001 - one bad request never prints a traceback or stops the server
                log.debug("serve: request failed", exc_info=True)
                self.close_connection = True

        def _admit(self, refuse) -> tuple | None:
            """``(url, params)`` of a request whose Host names this server and that carries the token, else ``None``
            after ``refuse(code, text)`` answered it."""
            if not server.host_allowed(self.headers.get("Host")):
                refuse(403, "forbidden: this Host is not this server (streamseg --serve-host NAME allows a name)")
                return None
            try:
                url = urlparse(self.path)
                params = parse_qs(url.query)
            except ValueError:
                refuse(400, "bad request")
                return None
            if not server.authorised(self, params):
                refuse(403, "forbidden: this server needs ?token=...")
                return None
            return url, params

        def _get(self) -> None:
            admitted = self._admit(lambda code, text: self._send(code, f"{text}\n".encode(), "text/plain"))
            if admitted is None:
                return
            url, params = admitted
            token = f"token={server.token}" if server.token else ""
            query = f"?{token}" if token else ""
            source = pictures.resolve_source((params.get("source") or [None])[0])
            if source is None:
                self._send(404, b"no such source\n", "text/plain")
                return
            if url.path in ("/", "/index.html"):
                self._send(200, page(pictures.source_keys(), controls, query, token).encode(), "text/html; charset=utf-8")
            elif url.path == "/stats":
                body = {**server.stats().as_dict(), "viewers": server.viewers, **controls.stats()}
                self._send(200, json.dumps(body).encode(), "application/json")
            elif url.path == "/metrics":
                from .metrics import CONTENT_TYPE, metrics_text

                self._send(200, metrics_text(server.stats), CONTENT_TYPE)
            elif url.path == "/healthz":
                from .metrics import health

                ok, text = health(server.stats)
                self._send(200 if ok else 503, text.encode(), "text/plain; charset=utf-8")
            elif url.path == "/frame.jpg":
                jpeg = pictures.latest_jpeg(source, timeout=5.0)
                if jpeg is None:
                    self._send(503, b"no frame yet\n", "text/plain")
                else:
                    self._send(200, jpeg, "image/jpeg")
            elif url.path == "/stream.mjpg":
                self._stream(source)
            else:
                self._send(404, b"not found\n", "text/plain")

        def _answer(self, code: int, message: str, **more: object) -> None:
            self._send(code, json.dumps({"message": message, **more}).encode(), "application/json")

        def _post(self) -> None:
            """``POST /prompt`` ``{"prompt": "person, red car"}``: the prompt set from the next batch on; ``POST /point``
            ``{"x": 320, "y": 180, "source": 0, "remove": false}``: track the object there (or stop). JSON only,
            so a page on another site cannot post it (a cross-site JSON request needs CORS, never granted here)."""
            self.close_connection = True  # one request per connection: a body never read is never taken for the next
            if self.headers.get("Transfer-Encoding"):
                return self._answer(411, "send the body with a Content-Length (no chunked encoding)")
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0:
                return self._answer(400, "bad Content-Length")
            if length > MAX_BODY:
                return self._answer(413, f"the body is {length} bytes; at most {MAX_BODY}")
            body = self.rfile.read(length) if length else b""
            admitted = self._admit(self._answer)
            if admitted is None:
                return
            url, _ = admitted
            if not server.origin_allowed(self.headers.get("Origin")):  # a page of another site, posting here
                return self._answer(403, "forbidden: a request from another site's page")
            if url.path not in controls.routes():
                return self._answer(404, "not found")
            if (self.headers.get("Content-Type") or "").split(";")[0].strip() != "application/json":
                answer = controls.apply(url.path, None)  # 404 when the model takes no such input
                return self._answer(answer.code if answer.code == 404 else 415,
                                    answer.message if answer.code == 404 else controls.usage(url.path))
            try:
                data = json.loads(body or b"null")
            except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
                data = None
            answer = controls.apply(url.path, data)
            self._answer(answer.code, answer.message, **answer.more)

        def _stream(self, source) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            server.viewer(+1)
            try:
                seq = 0
                while not server.closing:
                    seq, jpeg = pictures.next_jpeg(seq, source=source)
                    if jpeg is None:
                        continue
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                     + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
                    self.wfile.flush()
            finally:
                server.viewer(-1)

    return Handler
