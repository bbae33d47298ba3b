"""An OpenAI-compatible chat-completions server on 127.0.0.1 for tests, with fault injection.

It speaks enough of the OpenAI HTTP API for the real ``openai`` client: ``POST /v1/chat/completions``
answers with a ``chat.completion`` object (choices, usage) and errors come as OpenAI-shaped JSON.
The answers are synthetic test text, never a model's output.

Faults are chosen per request by a schedule (``schedule(pair_key, attempt, user_text) -> Fault | None``):
429 with ``Retry-After``, 500/503, slow answers, dropped connections, bodies cut short, malformed
JSON, answers with the wrong shape, empty answers and refusals; and, only when asked for by name
(never drawn at random), ``trickle``: the whole response, status line included, one byte every
``delay`` seconds, which no per-read timeout ever cuts off.

Every request body received is kept in ``bodies`` (in arrival order), so tests can check exactly
what the client sent.

The server keeps the books a teacher run is judged by, per pair (one pair = one distinct request
body: image, prompt, model and sampling parameters):

- ``requests``: requests received;
- ``paid``: successful answers delivered in full (HTTP 200, a usable answer);
- ``billed``: every answer the server generated, delivered or not (``paid`` + refusals, empty
  answers, bodies cut short, and answers whose client had gone before delivery);
- ``abandoned``: answers generated for a client that had already hung up (not delivered).

``python tests/openai_fake_server.py --port 8000 --fault_rate 0.3`` serves until interrupted.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import random
import select
import signal
import socket
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULT_KINDS = ("429", "500", "503", "slow", "drop", "truncate", "malformed", "bad_schema", "empty", "refusal")
NAMED_ONLY_FAULT_KINDS = ("trickle",)  # never drawn by seeded_faults
REFUSAL_TEXT = "I'm sorry, but I can't help with identifying the contents of this image."


@dataclass(frozen=True)
class Fault:
    kind: str
    retry_after: float | None = None  # seconds, for 429 (sent as Retry-After, or retry-after-ms if fractional)
    delay: float = 0.0  # seconds, for "slow" (the answer follows the delay); for "trickle", between bytes (default 1)

    def __post_init__(self):
        if self.kind not in FAULT_KINDS + NAMED_ONLY_FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; choose from {FAULT_KINDS + NAMED_ONLY_FAULT_KINDS}")


Schedule = Callable[[str, int, str], "Fault | None"]


def no_faults(pair_key: str, attempt: int, user_text: str) -> Fault | None:
    return None


def seeded_faults(rate: float, kinds=FAULT_KINDS, *, max_faults_per_pair: int = 2, seed: int = 0, retry_after: float = 0.2, slow_delay: float = 0.3) -> Schedule:
    """Each of a pair's first ``max_faults_per_pair`` attempts fails with probability ``rate``.

    The draw depends only on (seed, pair, attempt), so it is the same whatever order requests arrive in.
    """
    kinds = tuple(kinds)

    def schedule(pair_key: str, attempt: int, user_text: str) -> Fault | None:
        if attempt > max_faults_per_pair:
            return None
        rng = random.Random(f"{seed}:{pair_key}:{attempt}")
        if rng.random() >= rate:
            return None
        kind = rng.choice(kinds)
        return Fault(kind, retry_after=retry_after if kind == "429" else None, delay=slow_delay if kind == "slow" else 0.0)

    return schedule


def scripted_faults(faults_by_attempt: dict[int, Fault]) -> Schedule:
    """The same fault for every pair on the given attempt numbers (1-based), e.g. ``{1: Fault("429", 1)}``."""
    return lambda pair_key, attempt, user_text: faults_by_attempt.get(attempt)


class FakeOpenAIServer:
    """Run with ``with FakeOpenAIServer(api_key=...) as server: ... server.base_url ...``."""

    def __init__(self, *, api_key: str | None = None, schedule: Schedule = no_faults, latency: float = 0.0, host: str = "127.0.0.1", port: int = 0, prompt_tokens_per_image: int = 255):
        self.api_key = api_key
        self.schedule = schedule
        self.latency = latency  # seconds every answer takes to "generate"
        self.prompt_tokens_per_image = prompt_tokens_per_image
        self._lock = threading.Lock()
        self._hold_after: int | None = None
        self._released = threading.Event()
        self._stopping = threading.Event()
        self.reset_counts()
        self._httpd = _QuietHTTPServer((host, port), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # ---- lifecycle
    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> FakeOpenAIServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._released.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- books
    def reset_counts(self) -> None:
        with self._lock:
            self.requests: Counter[str] = Counter()
            self.paid: Counter[str] = Counter()
            self.billed: Counter[str] = Counter()
            self.abandoned: Counter[str] = Counter()
            self.faults: Counter[str] = Counter()
            self.delivered: dict[str, list[str]] = defaultdict(list)  # pair -> answers delivered in full
            self.bodies: list[dict] = []  # every request body received, as sent
            self.events: list[tuple[float, str, str]] = []  # (time, pair, what happened)
            self.unauthorized = 0
            self.held = 0  # requests that waited for release()
            self.in_flight = 0
            self.max_in_flight = 0  # most handlers open at once (may briefly exceed the client's concurrency: a handler ends just after its reply)

    def total(self, counter_name: str) -> int:
        with self._lock:
            return sum(getattr(self, counter_name).values())

    def hold_after(self, answers: int) -> None:
        """Once ``answers`` pairs are paid, hold every later request until ``release()``."""
        with self._lock:
            self._hold_after = answers
            self._released.clear()

    def release(self) -> None:
        self._released.set()

    def _note(self, pair: str, what: str) -> None:
        self.events.append((time.monotonic(), pair, what))

    # ---- answers
    def answer_text(self, body: dict, serial: int) -> str:
        text, image = _user_text_and_image(body)
        if image is None:
            return f"Synthetic fake-server class description #{serial} (test text, not a model's output) for the prompt '{text[:70]}'."
        digest = hashlib.sha256(image).hexdigest()[:12]
        return f"Synthetic fake-server answer #{serial} (test text, not a model's output) to '{text[-60:]}' about image {digest}."


class _QuietHTTPServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # a client that hung up mid-answer is expected here
        pass


def pair_key(body: dict) -> str:
    """What identifies one pair on the server side: everything the answer depends on."""
    fields = {name: body.get(name) for name in ("model", "messages", "temperature", "top_p", "max_tokens", "max_completion_tokens")}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _user_text_and_image(body: dict) -> tuple[str, bytes | None]:
    text, image = "", None
    for message in body.get("messages", []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            text += content
            continue
        for part in content or []:
            if part.get("type") == "text":
                text += part.get("text", "")
            elif part.get("type") == "image_url":
                url = part["image_url"]["url"]
                image = base64.b64decode(url.split(",", 1)[1])
    return text, image


def _client_gone(connection: socket.socket) -> bool:
    """True when the peer closed or reset the connection (it has nothing else to send us)."""
    try:
        readable, _, _ = select.select([connection], [], [], 0)
        if not readable:
            return False
        return connection.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _make_handler(server: FakeOpenAIServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # keep test output quiet
            pass

        def _send_json(self, status: int, payload, headers: dict[str, str] | None = None, raw: bytes | None = None) -> None:
            data = raw if raw is not None else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()

        def _error(self, status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> None:
            self._send_json(status, {"error": {"message": message, "type": kind, "param": None, "code": None}}, headers)

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._error(404, f"Unknown path {self.path}", "invalid_request_error")
                return
            expected = server.api_key
            given = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
            if expected is not None and given != expected:
                with server._lock:
                    server.unauthorized += 1
                # like the real API, echo a masked key back in the error message
                self._error(401, f"Incorrect API key provided: {given[:5]}****{given[-4:]}.", "invalid_request_error")
                return
            try:
                body = json.loads(raw)
            except ValueError:
                self._error(400, "We could not parse the JSON body of your request.", "invalid_request_error")
                return
            key = pair_key(body)
            with server._lock:
                server.bodies.append(body)
                server.in_flight += 1
                server.max_in_flight = max(server.max_in_flight, server.in_flight)
            try:
                self._handle(body, key)
            finally:
                with server._lock:
                    server.in_flight -= 1

        def _handle(self, body: dict, key: str) -> None:
            with server._lock:
                server.requests[key] += 1
                attempt = server.requests[key]
                fault = server.schedule(key, attempt, _user_text_and_image(body)[0])
                if fault is not None:
                    server.faults[fault.kind] += 1
                server._note(key, f"request:{fault.kind if fault else 'ok'}")
                hold = server._hold_after is not None and sum(server.paid.values()) >= server._hold_after
            if hold:
                with server._lock:
                    server.held += 1
                while not server._released.wait(0.05):
                    pass
            self._serve(body, key, fault)

        def _serve(self, body: dict, key: str, fault: Fault | None) -> None:
            kind = fault.kind if fault else None
            if kind == "429":
                delay = fault.retry_after if fault.retry_after is not None else 1.0
                header = {"Retry-After": str(int(delay))} if float(delay).is_integer() else {"retry-after-ms": str(int(delay * 1000))}
                with server._lock:
                    server._note(key, "429")
                self._error(429, "Rate limit reached for requests. Please try again later.", "requests", {**header, "x-should-retry": "true"})
                return
            if kind in ("500", "503"):
                self._error(int(kind), "The server had an error while processing your request.", "server_error")
                return
            if kind == "drop":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            delay = server.latency + (fault.delay if kind == "slow" else 0.0)
            if delay > 0 and kind not in ("malformed", "bad_schema"):
                deadline = time.monotonic() + delay
                while time.monotonic() < deadline and not _client_gone(self.connection) and not server._stopping.is_set():
                    time.sleep(0.02)
            if kind == "malformed":
                self._send_json(200, None, raw=b'{"id": "chatcmpl-broken", "object": "chat.completion", "choices": [{"index": 0, "mess')
                return
            if kind == "bad_schema":
                self._send_json(200, {"id": "chatcmpl-odd", "object": "chat.completion", "created": int(time.time()), "model": body.get("model")})
                return

            with server._lock:
                serial = sum(server.billed.values()) + 1
            if kind == "empty":
                content = ""
            elif kind == "refusal":
                content = REFUSAL_TEXT
            else:
                content = server.answer_text(body, serial)
            text, image = _user_text_and_image(body)
            prompt_tokens = len(text) // 4 + (server.prompt_tokens_per_image if image is not None else 0) + 10
            payload = {
                "id": f"chatcmpl-fake-{serial}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": None}, "finish_reason": "stop", "logprobs": None}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": max(1, len(content) // 4), "total_tokens": prompt_tokens + max(1, len(content) // 4)},
            }
            data = json.dumps(payload).encode()
            with server._lock:
                server.billed[key] += 1
                if _client_gone(self.connection):
                    server.abandoned[key] += 1
                    server._note(key, "abandoned")
                    self.close_connection = True
                    return
            if kind == "trickle":
                self._trickle(key, data, fault.delay or 1.0, content)
                return
            if kind == "truncate":
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            try:
                self._send_json(200, None, raw=data)
            except OSError:
                with server._lock:
                    server.abandoned[key] += 1
                return
            if kind not in ("empty", "refusal"):
                with server._lock:
                    server.paid[key] += 1
                    server.delivered[key].append(content)
                    server._note(key, "paid")

        def _trickle(self, key: str, data: bytes, interval: float, content: str) -> None:
            """The whole response, one byte every ``interval`` seconds, for as long as the client listens."""
            head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode()
            self.close_connection = True
            for byte in head + data:
                try:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                except OSError:
                    break
                deadline = time.monotonic() + interval
                while time.monotonic() < deadline and not server._stopping.is_set() and not _client_gone(self.connection):
                    time.sleep(0.02)
                if server._stopping.is_set() or _client_gone(self.connection):
                    break
            else:
                with server._lock:
                    server.paid[key] += 1
                    server.delivered[key].append(content)
                    server._note(key, "paid")
                return
            with server._lock:
                server.abandoned[key] += 1
                server._note(key, "abandoned")

    return Handler


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="OpenAI-compatible fake chat-completions server with fault injection (synthetic answers).")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api_key", default=None, help="require this bearer key (default: accept any)")
    parser.add_argument("--fault_rate", type=float, default=0.0, help="probability that each of a pair's first attempts fails")
    parser.add_argument("--faults", default=",".join(FAULT_KINDS), help="comma-separated fault kinds to draw from")
    parser.add_argument("--max_faults_per_pair", type=int, default=2)
    parser.add_argument("--retry_after", type=float, default=1.0, help="Retry-After seconds sent with 429")
    parser.add_argument("--slow_delay", type=float, default=2.0, help="seconds a 'slow' answer waits")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds every answer takes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    schedule = seeded_faults(args.fault_rate, args.faults.split(","), max_faults_per_pair=args.max_faults_per_pair, seed=args.seed, retry_after=args.retry_after, slow_delay=args.slow_delay)
    server = FakeOpenAIServer(api_key=args.api_key, schedule=schedule, latency=args.latency, port=args.port).start()
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    print(f"fake OpenAI server on {server.base_url} (synthetic answers); Ctrl-C or SIGTERM prints the books and stops", flush=True)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        twice = sum(1 for n in server.paid.values() if n > 1)
        print(
            f"requests={server.total('requests')} pairs_paid={len(server.paid)} paid_twice={twice} "
            f"billed={server.total('billed')} abandoned={server.total('abandoned')} faults={dict(server.faults)}",
            flush=True,
        )


if __name__ == "__main__":
    main()
