"""A fake SageMaker real-time endpoint, so the ``sagemaker`` adapter runs through real botocore.

It serves ``POST /endpoints/{EndpointName}/invocations-response-stream`` on 127.0.0.1 the way the
SageMaker runtime does (API version 2017-05-13, as botocore 1.43's service model describes it):
HTTP/1.1 with chunked transfer encoding, ``Content-Type: application/vnd.amazon.eventstream``, the
container's content type in ``X-Amzn-SageMaker-Content-Type``, and a body of AWS event-stream
messages (prelude, headers, payload, CRC32s): ``PayloadPart`` events whose payload is a piece of the
container's response, and, on failure, a ``ModelStreamError`` exception event. botocore decodes it
with its own ``EventStream``, so the adapter's parsing is exercised for real.

Behind it sits a fake model container, ``tgi`` (Server-Sent Events ``data:{...}`` lines, the last
with ``generated_text`` and ``details``) or ``lmi`` (JSON lines, LMI's rolling-batch schema). It
"generates" the UTF-8 bytes of ``inputs`` as token ids, cyclically, ``max_new_tokens`` of them.
How the response is cut into payload parts is controlled by ``events_per_part`` and ``part_size``.
"""

from __future__ import annotations

import binascii
import json
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message with string headers (header value type 7)."""
    raw_headers = b""
    for name, value in headers.items():
        n, v = name.encode(), value.encode()
        raw_headers += struct.pack("!B", len(n)) + n + struct.pack("!BH", 7, len(v)) + v
    total = 12 + len(raw_headers) + len(payload) + 4
    prelude = struct.pack("!II", total, len(raw_headers))
    prelude += struct.pack("!I", binascii.crc32(prelude))
    body = prelude + raw_headers + payload
    return body + struct.pack("!I", binascii.crc32(body))


def payload_part(data: bytes) -> bytes:
    return encode_message({":event-type": "PayloadPart", ":content-type": "application/octet-stream",
                           ":message-type": "event"}, data)


def model_stream_error(code: str, message: str) -> bytes:
    return encode_message({":exception-type": "ModelStreamError", ":content-type": "application/json",
                           ":message-type": "exception"}, json.dumps({"Message": message, "ErrorCode": code}).encode())


def container_events(container: str, body: dict[str, Any], tgi_error_after: int | None = None) -> list[bytes]:
    """The model container's streamed response, one ``bytes`` per generated token."""
    text = body["inputs"]
    params = body.get("parameters") or {}
    ids = list(text.encode("utf-8")) or [0]
    n = int(params.get("max_new_tokens", 20))
    events = []
    for i in range(n):
        if tgi_error_after is not None and i == tgi_error_after:
            events.append(b'data:{"error":"Model is overloaded","error_type":"overloaded"}\n\n')
            break
        token_id = ids[i % len(ids)]
        last = i == n - 1
        if container == "tgi":
            event: dict[str, Any] = {"index": i + 1, "token": {"id": token_id, "text": f"<{token_id}>",
                                                               "logprob": -0.5, "special": False},
                                     "generated_text": None, "details": None}
            if last:
                event["generated_text"] = "".join(f"<{t}>" for t in (ids * n)[:n])
                event["details"] = {"finish_reason": "length", "generated_tokens": n, "seed": None,
                                    "input_length": len(ids)}
            events.append(b"data:" + json.dumps(event).encode() + b"\n\n")
        else:
            event = {"token": {"id": token_id, "text": f"<{token_id}>", "log_prob": -0.5}}
            if last:
                event["generated_text"] = "".join(f"<{t}>" for t in (ids * n)[:n])
                event["details"] = {"finish_reason": "length", "generated_tokens": n, "inputs": text}
            events.append(json.dumps(event).encode() + b"\n")
    return events


class FakeSageMakerRuntime:
    """Start with ``with FakeSageMakerRuntime(...) as fake:``; pass ``fake.url`` as ``endpoint_url``."""

    def __init__(self, container: str = "tgi", *, events_per_part: int = 1, part_size: int | None = None,
                 split_messages: bool = False, stream_error_after_parts: int | None = None,
                 stream_error_code: str = "ModelInvocationTimeExceeded",
                 stream_error_message: str = "The model did not finish sending the response in time",
                 tgi_error_after: int | None = None,
                 delay_s: float = 0.0):
        self.container = container
        self.events_per_part = events_per_part
        self.part_size = part_size
        self.split_messages = split_messages
        self.stream_error_after_parts = stream_error_after_parts
        self.stream_error_code = stream_error_code
        self.stream_error_message = stream_error_message
        self.tgi_error_after = tgi_error_after
        self.delay_s = delay_s
        self.requests: list[dict[str, Any]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeSageMakerRuntime:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def parts(self, body: dict[str, Any]) -> list[bytes]:
        """The payload parts for one request: events grouped, then re-cut every ``part_size`` bytes."""
        events = container_events(self.container, body, self.tgi_error_after)
        k = self.events_per_part
        parts = [b"".join(events[i:i + k]) for i in range(0, len(events), k)]
        if self.part_size:
            stream = b"".join(parts)
            parts = [stream[i:i + self.part_size] for i in range(0, len(stream), self.part_size)]
        return parts

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                body = json.loads(raw)
                fake.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                self.send_response(200)
                self.send_header("Content-Type", "application/vnd.amazon.eventstream")
                self.send_header("X-Amzn-SageMaker-Content-Type",
                                 "text/event-stream" if fake.container == "tgi" else "application/jsonlines")
                self.send_header("x-Amzn-Invoked-Production-Variant", "AllTraffic")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for i, part in enumerate(fake.parts(body)):
                    if fake.stream_error_after_parts is not None and i == fake.stream_error_after_parts:
                        self._chunk(model_stream_error(fake.stream_error_code, fake.stream_error_message))
                        break
                    message = payload_part(part)
                    if fake.split_messages:  # one event-stream message across two network writes
                        self._chunk(message[:7])
                        message = message[7:]
                    self._chunk(message)
                    time.sleep(fake.delay_s)
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

        return Handler
