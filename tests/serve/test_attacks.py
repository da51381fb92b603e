"""The live view attacked as a hostile page, user or flaky network would (issue 23): state-changing requests
are JSON with the token, an allowed Host and Origin; bodies are bounded; bad values are a 400 with a reason;
slow, half-open and malformed connections hold up nobody; nothing crashes the server or shows a traceback.

The model's controls here are a recording stand-in for a prompt model and a point tracker: what is asserted is
what the server lets through to them (their own checks are tested with the real models in tests/models)."""

from __future__ import annotations

import json
import socket
import threading
import time

import numpy as np
import pytest

from streamseg.config import MAX_PROMPTS, parse_prompts
from streamseg.frames import Frame
from streamseg.serve.server import MAX_BODY, PreviewServer

TOKEN = "s3cret-token"


class Recorder:
    """Prompt and point controls that record what reached them (prompts parsed as the real head parses them)."""

    def __init__(self) -> None:
        self.prompts, self.changes, self.points = ("person",), 0, []
        self.lock = threading.Lock()

    def set_prompts(self, text):
        prompts = parse_prompts(text)
        with self.lock:
            self.prompts, self.changes = prompts, self.changes + 1
        return prompts

    def add_point(self, x, y, source=0):
        self.points.append(("add", x, y, source))

    def remove_point(self, x, y, source=0):
        self.points.append(("remove", x, y, source))


@pytest.fixture(scope="module")
def served():
    control = Recorder()
    server = PreviewServer("127.0.0.1:0", token=TOKEN, prompts=control, points=control, idle_timeout=2.0)
    server.write(Frame(index=0, image=np.zeros((48, 64, 3), np.uint8)))
    yield server, control
    server.close()


def raw(server, data: bytes, *, timeout: float = 5.0) -> tuple[int, bytes]:
    """Send ``data`` as it is; the status code and the whole answer (0 when the server only closed)."""
    port = int(server.url.rsplit(":", 1)[1].strip("/"))
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
    answer = b"".join(chunks)
    try:
        return int(answer.split(b" ", 2)[1]), answer
    except (IndexError, ValueError):
        return 0, answer


def post(server, path: str, body: bytes | str, *, content_type: str = "application/json", token: bool = True,
         host: str | None = "127.0.0.1", origin: str | None = None, extra: str = "",
         length: int | None = None) -> tuple[int, bytes]:
    body = body.encode() if isinstance(body, str) else body
    port = server.url.rsplit(":", 1)[1].strip("/")
    lines = [f"POST {path}{'?token=' + TOKEN if token else ''} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}:{port}")
    if origin is not None:
        lines.append(f"Origin: {origin.replace('PORT', port)}")
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body) if length is None else length}")
    return raw(server, ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode() + body)


GOOD_PROMPT = json.dumps({"prompt": "dog, red car"})
GOOD_POINT = json.dumps({"x": 10, "y": 12})

# (case, path, body, keyword arguments of post(), expected status, whether the control was reached)
CASES = [
    ("json prompt with the token", "/prompt", GOOD_PROMPT, {}, 200, True),
    ("token in a Bearer header", "/prompt", GOOD_PROMPT, {"token": False, "extra": f"Authorization: Bearer {TOKEN}\r\n"},
     200, True),
    ("form-encoded cross-site post", "/prompt", "prompt=dog", {"content_type": "application/x-www-form-urlencoded"},
     415, False),
    ("text/plain (a CORS simple request)", "/prompt", GOOD_PROMPT, {"content_type": "text/plain"}, 415, False),
    ("multipart form", "/prompt", GOOD_PROMPT, {"content_type": "multipart/form-data; boundary=x"}, 415, False),
    ("no content type", "/prompt", GOOD_PROMPT, {"content_type": ""}, 415, False),
    ("no token", "/prompt", GOOD_PROMPT, {"token": False}, 403, False),
    ("a wrong token", "/prompt", GOOD_PROMPT, {"token": False, "extra": "Authorization: Bearer nope\r\n"}, 403, False),
    ("a rebound Host name", "/prompt", GOOD_PROMPT, {"host": "evil.example"}, 403, False),
    ("no Host (HTTP/1.0 tools)", "/prompt", GOOD_PROMPT, {"host": None}, 200, True),
    ("Origin of another site", "/prompt", GOOD_PROMPT, {"origin": "http://evil.example"}, 403, False),
    ("Origin of another site, our port", "/prompt", GOOD_PROMPT, {"origin": "http://evil.example:PORT"}, 403, False),
    ("Origin null (a sandboxed frame)", "/prompt", GOOD_PROMPT, {"origin": "null"}, 403, False),
    ("Origin file://", "/prompt", GOOD_PROMPT, {"origin": "file://"}, 403, False),
    ("Origin of this page", "/prompt", GOOD_PROMPT, {"origin": "http://127.0.0.1:PORT"}, 200, True),
    ("Origin localhost", "/prompt", GOOD_PROMPT, {"origin": "http://localhost:PORT"}, 200, True),
    ("a body over the limit", "/prompt", "x" * 10, {"length": MAX_BODY + 1}, 413, False),
    ("a negative Content-Length", "/prompt", "", {"length": -5}, 400, False),
    ("chunked encoding", "/prompt", "", {"extra": "Transfer-Encoding: chunked\r\n"}, 411, False),
    ("not JSON", "/prompt", "{prompt: dog", {}, 400, False),
    ("a JSON array", "/prompt", "[1, 2]", {}, 400, False),
    ("JSON nested past the parser", "/prompt", "[" * 4000 + "]" * 4000, {}, 400, False),
    ("a prompt that is a number", "/prompt", json.dumps({"prompt": 5}), {}, 400, False),
    ("an empty prompt", "/prompt", json.dumps({"prompt": " , "}), {}, 400, False),
    ("too many prompts", "/prompt", json.dumps({"prompt": ",".join(f"p{i}" for i in range(MAX_PROMPTS + 1))}), {},
     400, False),
    ("a prompt of 300 characters", "/prompt", json.dumps({"prompt": "a" * 300}), {}, 400, False),
    ("unicode prompt", "/prompt", json.dumps({"prompt": "chien 🐕, voiture rouge"}), {}, 200, True),
    ("a point", "/point", GOOD_POINT, {}, 200, True),
    ("x NaN", "/point", '{"x": NaN, "y": 1}', {}, 400, False),
    ("x Infinity", "/point", '{"x": Infinity, "y": 1}', {}, 400, False),
    ("x negative", "/point", json.dumps({"x": -1, "y": 1}), {}, 400, False),
    ("x a string", "/point", json.dumps({"x": "5", "y": 1}), {}, 400, False),
    ("x true", "/point", json.dumps({"x": True, "y": 1}), {}, 400, False),
    ("y missing", "/point", json.dumps({"x": 1}), {}, 400, False),
    ("a source that does not exist", "/point", json.dumps({"x": 1, "y": 1, "source": 3}), {}, 400, False),
    ("source a string", "/point", json.dumps({"x": 1, "y": 1, "source": "0"}), {}, 400, False),
    ("remove not a boolean", "/point", json.dumps({"x": 1, "y": 1, "remove": "yes"}), {}, 400, False),
    ("an unknown route", "/shutdown", "{}", {}, 404, False),
]


@pytest.mark.parametrize("case, path, body, kwargs, code, reached", CASES, ids=[c[0] for c in CASES])
def test_state_changing_requests(served, case, path, body, kwargs, code, reached):
    server, control = served
    before = (control.changes, len(control.points))
    status, answer = post(server, path, body, **kwargs)
    assert status == code, answer
    assert ((control.changes, len(control.points)) != before) == reached
    if code in (400, 411, 413, 415) or code == 403 and "token" not in case:
        reason = json.loads(answer.split(b"\r\n\r\n", 1)[1])["message"]
        assert reason and "Traceback" not in reason  # a reason in words
    if code == 400 and path == "/point" and "missing" not in case:
        assert any(w in answer for w in (b"must be", b"send JSON")), answer


def test_what_a_prompt_says_is_shown_escaped_and_the_token_never_in_stats(served):
    server, _ = served
    assert post(server, "/prompt", json.dumps({"prompt": '"><script>alert(1)</script>'}))[0] == 200
    status, page = raw(server, f"GET /?token={TOKEN} HTTP/1.0\r\n\r\n".encode())
    assert status == 200 and b"<script>alert(1)" not in page and b"&lt;script&gt;" in page
    status, stats = raw(server, f"GET /stats?token={TOKEN} HTTP/1.0\r\n\r\n".encode())
    assert status == 200 and TOKEN.encode() not in stats.split(b"\r\n\r\n", 1)[1]


@pytest.mark.parametrize("case", ["request line of 70 KB", "200 headers", "a binary request line", "an HTTP/2 preface",
                                  "a pipelined second POST"])
def test_malformed_requests_get_an_answer_or_a_close_never_a_crash(served, case):
    server, control = served
    data = {
        "request line of 70 KB": b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n",
        "200 headers": b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n",
        "a binary request line": bytes(range(256)) + b"\r\n\r\n",
        "an HTTP/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "a pipelined second POST": (f"POST /prompt?token={TOKEN} HTTP/1.1\r\nContent-Type: application/json\r\n"
                                    f"Content-Length: {len(GOOD_PROMPT)}\r\n\r\n{GOOD_PROMPT}").encode() * 2,
    }[case]
    changes = control.changes
    status, answer = raw(server, data)
    assert status in (0, 200, 400, 404, 414, 431, 505), answer[:200]
    if case == "a pipelined second POST":  # one request per POST connection: the second is never taken
        assert status == 200 and answer.count(b"HTTP/1.") == 1 and control.changes == changes + 1
    assert raw(server, f"GET /stats?token={TOKEN} HTTP/1.0\r\n\r\n".encode())[0] == 200  # still serving


def test_slow_and_half_open_connections_hold_up_nobody(served):
    server, control = served
    port = int(server.url.rsplit(":", 1)[1].strip("/"))
    slow = []
    for _ in range(8):  # headers dribbled, a body promised and never sent, a connection that says nothing
        s = socket.create_connection(("127.0.0.1", port))
        slow.append(s)
    slow[0].sendall(b"GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no end of headers
    slow[1].sendall((f"POST /prompt?token={TOKEN} HTTP/1.1\r\nContent-Type: application/json\r\n"
                     "Content-Length: 500\r\n\r\n{\"prompt\"").encode())  # 9 of 500 bytes
    t0 = time.monotonic()
    status, _ = post(server, "/prompt", GOOD_PROMPT)
    assert status == 200 and time.monotonic() - t0 < 2.0  # answered beside them, at once
    time.sleep(2.5)  # the idle timeout (2 s here; 10 s by default) closes each of them
    for s in slow:
        s.settimeout(2.0)
        try:
            while s.recv(65536):  # an answer (a 408 or nothing), then the close: b""
                pass
        except TimeoutError:
            pytest.fail("a stalled connection was kept open past the idle timeout")
        except ConnectionResetError:
            pass  # closed
        finally:
            s.close()
    assert control.prompts == ("dog", "red car")  # the half-sent prompt never applied
