"""Fake of ``sglang.srt.entrypoints.engine.Engine`` (commit 001067f, 2026), as a caller observes it.

* ``Engine(**kwargs)``: the keywords are ``ServerArgs`` fields (an unknown one is a ``TypeError``, as
  for the real dataclass); ``model_path`` must be a directory with ``config.json``.
* ``async_generate(...)`` returns an async generator of dicts when ``stream=True``. Each dict has
  ``output_ids`` and ``meta_info`` (``id``, ``finish_reason`` — ``None`` until the end, then
  ``{"type": "length", "length": N}``, ``{"type": "stop", "matched": id}`` or ``{"type": "abort",
  "message": ...}`` —, ``prompt_tokens``, ``completion_tokens``, ``cached_tokens``), plus ``text``
  unless ``skip_tokenizer_init``. By default (``incremental_streaming_output=False``) ``output_ids``
  is *cumulative*, and intermediate dicts hand out the request state's own list, which keeps growing
  after the dict is yielded (``TokenizerManager._handle_batch_output``); with
  ``incremental_streaming_output=True`` each dict holds only the new ids.
* The first request binds the engine to the running event loop (``auto_create_handle_loop``); a
  request from another loop fails.
* ``sampling_params`` keys are ``SamplingParams`` fields; defaults ``max_new_tokens=128``,
  ``temperature=1.0``, ``ignore_eos=False``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional, Union

from ... import _fake

SERVER_ARGS = dict(
    model_path=None, tokenizer_path=None, tokenizer_mode="auto", skip_tokenizer_init=False, load_format="auto",
    trust_remote_code=False, dtype="auto", kv_cache_dtype="auto", quantization=None, context_length=None,
    device=None, served_model_name=None, random_seed=None, log_level="error", tp_size=1, dp_size=1,
    mem_fraction_static=None, max_running_requests=None, max_total_tokens=None, chunked_prefill_size=None,
    disable_radix_cache=False, disable_cuda_graph=False, cuda_graph_max_bs=None, attention_backend=None,
    sampling_backend=None, incremental_streaming_output=False, enable_metrics=False, stream_interval=1,
)
SAMPLING_PARAMS = dict(
    max_new_tokens=128, stop=None, stop_token_ids=None, temperature=1.0, top_p=1.0, top_k=-1, min_p=0.0,
    frequency_penalty=0.0, presence_penalty=0.0, repetition_penalty=1.0, min_new_tokens=0, n=1, ignore_eos=False,
    skip_special_tokens=True, spaces_between_special_tokens=True, no_stop_trim=False, logit_bias=None,
    sampling_seed=None,
)


class Engine:
    def __init__(self, **kwargs: Any):
        for key in kwargs:
            if key not in SERVER_ARGS:
                raise TypeError(f"ServerArgs.__init__() got an unexpected keyword argument '{key}'")
        if not kwargs.get("model_path"):
            raise TypeError("ServerArgs.__init__() missing 1 required positional argument: 'model_path'")
        config = Path(kwargs["model_path"]) / "config.json"
        if not config.is_file():
            raise OSError(f"{kwargs['model_path']} does not appear to have a file named config.json")
        _fake.record("Engine.__init__", **kwargs)
        self.server_args = SimpleNamespace(**{**SERVER_ARGS, **kwargs})
        self._eos = json.loads(config.read_text()).get("eos_token_id")
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._shut = False

    async def async_generate(self, prompt: Optional[Union[list[str], str]] = None,
                             sampling_params: Optional[Union[list[dict], dict]] = None,
                             input_ids: Optional[Union[list[list[int]], list[int]]] = None,
                             return_logprob: Optional[Union[list[bool], bool]] = False,
                             stream: bool = False, rid: Optional[Union[list[str], str]] = None, **kwargs: Any):
        _fake.record("Engine.async_generate", prompt=prompt, sampling_params=sampling_params, input_ids=input_ids,
                     return_logprob=return_logprob, stream=stream, rid=rid, **kwargs)
        if self._shut:
            raise RuntimeError("the engine has been shut down")
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError("Task got Future attached to a different loop")
        if (prompt is None) == (input_ids is None):
            raise ValueError("Either text or input_ids should be provided.")
        if input_ids is None and self.server_args.skip_tokenizer_init:
            raise ValueError("input_ids must be provided when skip_tokenizer_init is set")
        if input_ids is not None and input_ids and isinstance(input_ids[0], list):
            raise NotImplementedError("the fake mirrors single requests only")
        params = dict(SAMPLING_PARAMS)
        for key, value in (sampling_params or {}).items():
            if key not in SAMPLING_PARAMS:
                raise TypeError(f"SamplingParams.__init__() got an unexpected keyword argument '{key}'")
            params[key] = value
        ids = list(input_ids) if input_ids is not None else list(str(prompt).encode("utf-8"))
        gen = self._stream(ids, params, rid or uuid.uuid4().hex)
        if stream:
            return gen
        last = None
        async for out in gen:
            last = out
        return last

    async def _stream(self, ids: list[int], params: dict[str, Any], rid: str):
        incremental = bool(self.server_args.incremental_streaming_output)
        with_text = not self.server_args.skip_tokenizer_init
        state: list[int] = []
        sent = 0
        finish: Optional[dict[str, Any]] = None
        step = max(1, _fake.SETTINGS.tokens_per_chunk)
        while finish is None:
            await asyncio.sleep(_fake.SETTINGS.delay_s)
            for _ in range(step):
                if _fake.SETTINGS.abort_after is not None and len(state) >= _fake.SETTINGS.abort_after:
                    finish = {"type": "abort", "message": "fake abort", "status_code": 500}
                    break
                token = ids[len(state) % len(ids)]
                if token == self._eos and not params["ignore_eos"]:
                    finish = {"type": "stop", "matched": token}
                    break
                state.append(token)
                if len(state) >= params["max_new_tokens"]:
                    finish = {"type": "length", "length": params["max_new_tokens"]}
                    break
            meta = {"id": rid, "finish_reason": finish, "prompt_tokens": len(ids), "completion_tokens": len(state),
                    "cached_tokens": 0}
            if incremental:
                out: dict[str, Any] = {"output_ids": state[sent:], "meta_info": meta}
            else:
                out = {"output_ids": state if finish is None else list(state), "meta_info": meta}
            if with_text:
                out["text"] = "".join(f"<{t}>" for t in (out["output_ids"]))
            sent = len(state)
            yield out

    def shutdown(self) -> None:
        _fake.record("Engine.shutdown")
        self._shut = True
