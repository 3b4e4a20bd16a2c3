"""Deliberately unfaithful backends for the fidelity tests, loaded through LLMCOMPARE_PLUGINS.

Both run the real model through transformers with their own greedy loop (one forward per token, KV
cache kept), so they decode exactly like the reference except where they are told not to:

* ``flipper``: at every step where the model's top-2 log-probabilities are within ``flip_below``
  nats, it takes the second token: it flips near-ties only, as a backend with slightly different
  rounding would. The fidelity pass must not call it broken.
* ``broken:noisy`` adds seeded Gaussian noise (``noise`` nats) to every step's logits, as a bad
  kernel or a broken quantization would; ``broken:drop`` loses the token at position ``drop_at``
  from the stream. The fidelity pass must call both real divergences.
"""

from __future__ import annotations

from llmcompare import hookimpl
from llmcompare.backend import BackendSpec, Capabilities, Generation, OptionSpec, clock
from llmcompare.backends.hf_transformers import TransformersBackend


class _GreedyLoop(TransformersBackend):
    def load(self) -> None:  # float32 weights whatever the variant names
        from dataclasses import replace

        from llmcompare.backends.hf_transformers import load_model

        self.model, self.tokenizer = load_model(replace(self.config, variant="fp32"))

    def pick(self, step: int, logp):
        return int(logp.argmax())

    def generate(self, prompt, max_new_tokens, *, stop_at_eos=False):
        import torch

        eos = self.eos_ids()
        ids, times = [], []
        finish = "length"
        past = None
        x = torch.tensor([list(prompt)], dtype=torch.long)
        with torch.inference_mode():
            for step in range(max_new_tokens):
                out = self.model(input_ids=x, past_key_values=past, use_cache=True)
                past = out.past_key_values
                logp = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
                token = self.pick(step, logp)
                if stop_at_eos and token in eos:
                    finish = "stop"
                    break
                ids.append(token)
                times.append(clock())
                x = torch.tensor([[token]], dtype=torch.long)
        return Generation(ids, times, prompt_tokens=len(prompt), finish_reason=finish)


class Flipper(_GreedyLoop):
    def pick(self, step, logp):
        top = logp.topk(2)
        if float(top.values[0] - top.values[1]) < float(self.config.options.get("flip_below", 0.3)):
            return int(top.indices[1])
        return int(top.indices[0])


class Broken(_GreedyLoop):
    def pick(self, step, logp):
        import torch

        if self.config.variant == "noisy":
            g = torch.Generator().manual_seed(1000 + step)
            noise = torch.randn(logp.shape, generator=g) * float(self.config.options.get("noise", 3.0))
            return int((logp + noise).argmax())
        return int(logp.argmax())

    def generate(self, prompt, max_new_tokens, *, stop_at_eos=False):
        gen = super().generate(prompt, max_new_tokens, stop_at_eos=stop_at_eos)
        k = int(self.config.options.get("drop_at", 5))
        if self.config.variant == "drop" and len(gen.token_ids) > k:
            del gen.token_ids[k], gen.token_times[k]
        return gen


CAPS = Capabilities(devices=("cpu",), model_formats=("hf", "synthetic"), natural_stop=True)


@hookimpl
def register_backends(register):
    register(BackendSpec(name="flipper", target="fidelity_testplugins:Flipper", install="-", requires=("torch",),
                         variants={"fp32": "float32"}, default_variant="fp32", capabilities=CAPS,
                         options={"flip_below": OptionSpec(float, 0.3, "flip steps whose top-2 are this close (nats)")}))
    register(BackendSpec(name="broken", target="fidelity_testplugins:Broken", install="-", requires=("torch",),
                         variants={"noisy": "noisy logits", "drop": "drops a token"}, default_variant="noisy",
                         capabilities=CAPS,
                         options={"noise": OptionSpec(float, 3.0, "logit noise, nats"),
                                  "drop_at": OptionSpec(int, 5, "the output position whose token is lost")}))
