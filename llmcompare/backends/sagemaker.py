"""Amazon SageMaker real-time endpoints, streamed with boto3's ``invoke_endpoint_with_response_stream``.

* Request: ``invoke_endpoint_with_response_stream(EndpointName=..., Body=json, ContentType=
  "application/json")`` with a TGI payload (``-o payload=tgi``, the Hugging Face LLM container:
  ``{"inputs": text, "parameters": {"max_new_tokens": N, "do_sample": false, "details": true},
  "stream": true}``) or an LMI payload (``-o payload=lmi``, DJL's large-model-inference container,
  the same plus ``"ignore_eos_token": true``, which LMI documents for its vLLM backend).
* Fixed length: TGI cannot ignore EOS over its API, so a TGI endpoint may stop early; the count and
  ``finish_reason`` are checked and a short answer is flagged, never hidden. Greedy is explicit.
* Response: botocore decodes the event stream; each ``PayloadPart`` holds raw bytes of the
  container's response: TGI's Server-Sent Events (``data:{...}`` lines) or LMI's JSON lines. A line
  can be split across parts and a part can hold several lines, so bytes are buffered until a newline.
  Every event carries ``token.id``, so the output is counted from ids; tokens completed by one part
  share its arrival time. The last event's ``details`` give the finish reason, the engine's count
  and (TGI) the prompt length.
* Errors become :class:`~llmcompare.errors.RequestFailed`: throttling, ``ModelNotReadyException``
  and a container 429/503 are ``overload``; other container 4xx and validation errors
  ``client_error``; 5xx ``server_error``. botocore keeps only the code and message of an in-stream
  ``ModelStreamError``, so SageMaker's invocation time limit (60 s for real-time endpoints) is
  recognised by its message or by the elapsed time and reported as ``timeout_total``; a broken
  stream is ``stream_cut``. Automatic retries are off, so throttling is counted, not hidden.
* The endpoint is not trusted: a line longer than ``llmcompare.limits.MAX_EVENT_BYTES`` or a number
  that is not a token id or a count is ``malformed``; more tokens than the forced length and its slack
  (``llmcompare.limits.token_cap``) is ``overrun``, and the stream is closed; the ids' count is
  cross-checked against ``details.generated_tokens`` into the record's ``count_check``; strings it
  sends are made valid UTF-8 and bounded.
* Credentials come from boto3's default chain (environment, profile, instance role) and are never
  read into options, logs or records; ``engine_version`` names only the endpoint and the region.
* Concurrency: boto3 is synchronous, so each request streams in a worker thread (``max_concurrency``
  of them, with as many pooled connections) and hands its chunks to the caller's event loop.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from llmcompare import hookimpl, limits
from llmcompare.backend import BackendConfig, BackendSpec, Capabilities, Chunk, OptionSpec, clock
from llmcompare.backends.http_transport import CheckedChunk
from llmcompare.errors import RequestFailed, UserError
from llmcompare.limits import count_value, safe_text, token_id
from llmcompare.records import count_check

INVOCATION_LIMIT_S = 60.0
"""SageMaker's invocation time limit for real-time endpoints."""
OVERLOAD_CODES = {"ThrottlingException", "ModelNotReadyException", "ServiceUnavailable", "ServiceUnavailableException"}
TGI_ERROR_KINDS = {"overloaded": "overload", "validation": "client_error"}


class SageMakerBackend:

    def __init__(self, config: BackendConfig):
        self.config = config
        opts = dict(config.options)
        self.endpoint: str | None = opts.get("endpoint")
        if not self.endpoint:
            raise UserError("backend 'sagemaker' needs the endpoint's name: -o sagemaker.endpoint=NAME")
        self.region: str | None = opts.get("region")
        self.payload: str = opts.get("payload") or "tgi"
        self.inference_component: str | None = opts.get("inference_component")
        self.endpoint_url: str | None = opts.get("endpoint_url")
        self.ignore_eos: bool = opts.get("ignore_eos", True)
        self.max_concurrency: int = opts.get("max_concurrency") or 64
        self.connect_timeout_s: float = opts.get("connect_timeout_s") or 10.0
        self.read_timeout_s: float = opts.get("read_timeout_s") or INVOCATION_LIMIT_S + 10
        self.client = None
        self._pool: ThreadPoolExecutor | None = None
        self._tokenizer = None

    def load(self) -> None:
        import boto3
        from botocore.config import Config

        session = boto3.session.Session(region_name=self.region)
        self.region = session.region_name
        if not self.region:
            raise UserError("backend 'sagemaker' has no AWS region: pass -o sagemaker.region=REGION or set AWS_REGION")
        if session.get_credentials() is None:
            raise UserError("backend 'sagemaker' found no AWS credentials in boto3's default chain (environment,"
                            " ~/.aws profile, instance role); configure them there, never in an option")
        config = Config(connect_timeout=self.connect_timeout_s, read_timeout=self.read_timeout_s,
                        retries={"total_max_attempts": 1}, max_pool_connections=self.max_concurrency)
        self.client = session.client("sagemaker-runtime", endpoint_url=self.endpoint_url, config=config)
        self._pool = ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="llmcompare-sagemaker")

    # ---- one request ----
    def body(self, text: str, max_new_tokens: int) -> bytes:
        parameters: dict[str, Any] = {"max_new_tokens": int(max_new_tokens), "do_sample": False, "details": True}
        if self.payload == "lmi" and self.ignore_eos:
            parameters["ignore_eos_token"] = True
        return json.dumps({"inputs": text, "parameters": parameters, "stream": True}).encode("utf-8")

    def request_kwargs(self, text: str, max_new_tokens: int) -> dict[str, Any]:
        kwargs: dict[str, Any] = dict(EndpointName=self.endpoint, Body=self.body(text, max_new_tokens),
                                      ContentType="application/json")
        if self.inference_component:
            kwargs["InferenceComponentName"] = self.inference_component
        return kwargs

    async def astream(self, prompt: Sequence[int] | str, max_new_tokens: int) -> AsyncIterator[Chunk]:
        if not isinstance(prompt, str):
            raise TypeError("backend 'sagemaker' takes the prompt as text")
        loop = asyncio.get_running_loop()
        items: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()
        loop.run_in_executor(self._pool, self.invoke, prompt, max_new_tokens, _deliverer(loop, items), cancel)
        try:
            while True:
                item = await items.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            cancel.set()

    def invoke(self, text: str, max_new_tokens: int, deliver: Callable[[Any], None], cancel: threading.Event) -> None:
        """Runs in a worker thread: stream one request, handing each chunk (or the failure) to ``deliver``."""
        t0 = clock()
        parser = StreamParser(cap=limits.token_cap(max_new_tokens))
        try:
            response = self.client.invoke_endpoint_with_response_stream(**self.request_kwargs(text, max_new_tokens))
            stream = response["Body"]
            try:
                for event in stream:
                    if cancel.is_set():
                        return
                    part = event.get("PayloadPart")
                    if part is not None:
                        chunk = parser.feed(part.get("Bytes", b""), clock())
                        if chunk is not None:
                            deliver(chunk)
            finally:
                stream.close()
            chunk = parser.close(clock())
            if chunk is not None:
                deliver(chunk)
        except Exception as exc:
            deliver(request_failure(exc, clock() - t0))
        finally:
            deliver(None)

    def count_tokens(self, text: str) -> int:
        """The endpoint's tokenizer is not reachable through SageMaker: the shared tokenizer counts."""
        if self._tokenizer is None:
            self._tokenizer = self.config.model.tokenizer(trust_remote_code=self.config.trust_remote_code)
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def engine_version(self) -> dict[str, str]:
        versions = {"sagemaker_endpoint": str(self.endpoint), "sagemaker_region": str(self.region)}
        if self.inference_component:
            versions["sagemaker_inference_component"] = self.inference_component
        return versions

    def unload(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self.client is not None:
            self.client.close()
        self._pool = None
        self.client = None


class StreamParser:
    """Payload-part bytes → :class:`Chunk` values, for TGI's SSE and LMI's JSON lines alike. ``cap``
    bounds the tokens read (:func:`llmcompare.limits.token_cap`); a line may hold
    :data:`~llmcompare.limits.MAX_EVENT_BYTES`."""

    def __init__(self, cap: int | None = None) -> None:
        self.buffer = b""
        self.finished = False
        self.cap = cap
        self.tokens = 0

    def feed(self, data: bytes, t: float) -> Chunk | None:
        """Take one part's bytes; return the tokens its complete lines carry, or None."""
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        if len(self.buffer) > limits.MAX_EVENT_BYTES or any(len(line) > limits.MAX_EVENT_BYTES for line in lines):
            self.buffer = b""
            raise RequestFailed("malformed", f"the endpoint sent a line longer than {limits.MAX_EVENT_BYTES} bytes")
        return self._chunk(lines, t)

    def close(self, t: float) -> Chunk | None:
        """End of stream: parse a last line that had no newline; fail if the final event never came."""
        rest, self.buffer = self.buffer, b""
        chunk = self._chunk([rest], t) if rest.strip() else None
        if not self.finished:
            raise RequestFailed("stream_cut", "the endpoint's stream ended before its final event (no details)")
        return chunk

    def _chunk(self, lines: list[bytes], t: float) -> Chunk | None:
        ids: list[int] = []
        final: dict[str, Any] | None = None
        for raw in lines:
            event = _event(raw)
            if event is None:
                continue
            if "error" in event:
                kind = TGI_ERROR_KINDS.get(safe_text(event.get("error_type"), 64), "server_error")
                raise RequestFailed(kind, f"the container reported: {safe_text(event['error'], limits.MAX_ERROR_TEXT)}")
            details = event.get("details")
            if isinstance(details, dict) and details.get("finish_reason") == "error":
                raise RequestFailed("server_error", "the container reported an error mid-stream (finish_reason=error)")
            token = event.get("token")
            if isinstance(token, dict) and "id" in token:
                if self.cap is not None and self.tokens + len(ids) + 1 > self.cap:
                    raise RequestFailed("overrun", f"the endpoint sent more than {self.cap} tokens (the forced length"
                                        f" and {limits.TOKEN_SLACK} of slack); the stream was closed")
                ids.append(token_id(token["id"], "an event with"))
            if isinstance(details, dict):
                final = details
        self.tokens += len(ids)
        if final is None:
            return Chunk(ids, t) if ids else None
        self.finished = True
        generated = count_value(final.get("generated_tokens"), "details.generated_tokens",
                                self.cap if self.cap is not None else limits.MAX_COUNT)
        finish = final.get("finish_reason")
        return CheckedChunk(ids, t, finish_reason=safe_text(finish, limits.MAX_FINISH_REASON) if finish is not None else None,
                            prompt_tokens=count_value(final.get("input_length"), "details.input_length"),
                            engine_output_tokens=generated,
                            count_check=count_check(ids=self.tokens, generated_tokens=generated))


def _event(raw: bytes) -> dict[str, Any] | None:
    """One line of SSE or JSON lines → its JSON object; None for blank, comment and non-data lines."""
    try:
        line = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise RequestFailed("malformed", "the endpoint sent a line that is not UTF-8") from None
    if not line or line.startswith(":") or line.startswith(("event:", "id:", "retry:")):
        return None
    if line.startswith("data:"):
        line = line[5:].strip()
    if line == "[DONE]":
        return None
    try:
        event = json.loads(line)
    except ValueError:  # not JSON, not UTF-8, or an integer of too many digits
        raise RequestFailed("malformed", f"the endpoint sent a line that is not JSON: {safe_text(line[:80], 100)!r}") from None
    except RecursionError:
        raise RequestFailed("malformed", "the endpoint sent a line nested too deeply") from None
    if not isinstance(event, dict):
        raise RequestFailed("malformed", f"the endpoint sent {type(event).__name__}, not a JSON object")
    return event


def request_failure(exc: BaseException, elapsed_s: float) -> BaseException:
    """The :class:`RequestFailed` kind for a botocore failure (any other exception is returned as is)."""
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        ReadTimeoutError,
    )

    if isinstance(exc, RequestFailed):
        return exc
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = safe_text(error.get("Code", ""), limits.MAX_SERVER_TEXT)
        message = safe_text(error.get("Message", "") or exc, limits.MAX_ERROR_TEXT)
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code == "ModelStreamError":
            timed_out = elapsed_s >= INVOCATION_LIMIT_S - 1 or "time" in message.lower()
            kind = "timeout_total" if timed_out else "stream_cut"
        elif "timed out" in message.lower():
            kind = "timeout_total"
        elif code == "InternalStreamFailure":
            kind = "server_error"
        elif code in OVERLOAD_CODES:
            kind = "overload"
        else:
            if code == "ModelError":  # the container's own status, when SageMaker passes it on
                status = int(exc.response.get("OriginalStatusCode") or 500)
            kind = "overload" if status in (429, 503) else "client_error" if 400 <= status < 500 else "server_error"
        note = ""
        if kind == "timeout_total":
            note = f" (after {elapsed_s:.1f} s; the invocation limit is {INVOCATION_LIMIT_S:g} s)"
        return RequestFailed(kind, f"SageMaker {code}: {message}{note}")
    if isinstance(exc, ReadTimeoutError):
        return RequestFailed("timeout_total", f"no data from the endpoint within the read timeout: {exc}")
    if isinstance(exc, ConnectTimeoutError):
        return RequestFailed("timeout_connect", str(exc))
    if isinstance(exc, EndpointConnectionError):
        return RequestFailed("connect", str(exc))
    if isinstance(exc, ConnectionClosedError):
        return RequestFailed("stream_cut", str(exc))
    return exc


def _deliverer(loop: asyncio.AbstractEventLoop, items: asyncio.Queue) -> Callable[[Any], None]:
    def deliver(item: Any) -> None:
        try:
            loop.call_soon_threadsafe(items.put_nowait, item)
        except RuntimeError:  # the caller's loop has closed: nobody is waiting for this request any more
            pass

    return deliver


@hookimpl
def register_backends(register):
    register(
        BackendSpec(
            name="sagemaker",
            target="llmcompare.backends.sagemaker:SageMakerBackend",
            install="pip install 'llmcompare[sagemaker]'",
            requires=("boto3",),
            options={
                "endpoint": OptionSpec(str, None, "the SageMaker endpoint's name (required)"),
                "region": OptionSpec(str, None, "AWS region (default: boto3's, e.g. AWS_REGION)"),
                "payload": OptionSpec(str, "tgi", "the container's request schema", ("tgi", "lmi")),
                "inference_component": OptionSpec(str, None, "InferenceComponentName, for endpoints that use them"),
                "ignore_eos": OptionSpec(bool, True, "lmi: send ignore_eos_token (LMI's vLLM backend takes it)"),
                "max_concurrency": OptionSpec(int, 64, "requests in flight at once (threads and connections)",
                                              minimum=1),
                "connect_timeout_s": OptionSpec(float, 10.0, "botocore connect timeout"),
                "read_timeout_s": OptionSpec(float, INVOCATION_LIMIT_S + 10, "botocore read timeout between bytes"),
                "endpoint_url": OptionSpec(str, None, "a SageMaker runtime URL other than AWS's (a VPC endpoint, a"
                                                      " local fake)"),
            },
            capabilities=Capabilities(accepts_token_ids=False, concurrent=True, devices=("cpu", "cuda", "neuron"),
                                      in_process=False, model_formats=("hf", "gguf", "synthetic"),
                                      prefix_cache="server"),  # the endpoint's deployment decides: see the docs
            description="A SageMaker real-time endpoint (TGI or LMI container), streamed through boto3.",
            distributions=("boto3", "botocore"),
        )
    )
