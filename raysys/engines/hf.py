"""HFEngine: batched generation with transformers ``generate`` (left padding, KV cache).

Loads the model once and serves many ``generate`` calls; ``load_weights`` swaps in a trained
model or adapter without a new process. Results follow vLLM's conventions so the two engines
are interchangeable: ``text`` excludes the stop string (and special tokens), ``token_ids``
run up to and including the token that completed the stop string or the EOS token, and
logprobs are those of the unmodified model distribution (before temperature / top-k / top-p).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from raysys.config import ModelSpec
from raysys.prompts import encode_prompt
from raysys.engines.base import Completion, SamplingParams

if TYPE_CHECKING:
    import torch


# ------------------------------------------------------------------------------------------
# Pure helpers
# ------------------------------------------------------------------------------------------


def length_order(lengths: list[int]) -> list[int]:
    """Indices sorted longest first (stable): batches then hold prompts of similar length,
    so little compute goes to padding, and the largest batch shape is met first."""
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])


def chunks(items: list[int], size: int) -> list[list[int]]:
    """``items`` cut into consecutive lists of at most ``size``."""
    return [items[s:s + size] for s in range(0, len(items), size)]


def first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    """Index of the earliest occurrence of any stop string in ``text``, or None."""
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(hits) if hits else None


def cut_at_eos(token_ids: list[int], eos_ids: set[int]) -> tuple[list[int], bool]:
    """Tokens up to and including the first EOS; whether an EOS was found."""
    for i, t in enumerate(token_ids):
        if t in eos_ids:
            return token_ids[:i + 1], True
    return token_ids, False


def resolve_device(device: str | None) -> str:
    """``device`` as given, else ``"cuda"`` when a GPU is visible, else ``"cpu"``."""
    if device is not None:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str, device: str) -> str:
    """``auto`` means bf16 on CUDA (the memory/speed sweet spot) and fp32 elsewhere: CPU bf16
    matmuls are slower than fp32 on most CPUs and make greedy outputs differ from vLLM's."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if device.startswith("cuda") else "float32"


def generation_kwargs(params: SamplingParams, greedy: bool, pad_id: int,
                      eos_ids: list[int]) -> dict[str, Any]:
    """``GenerationConfig`` fields for ``params``.

    transformers fills every field left ``None`` from the model dir's generation_config
    (a hub model's temperature, repetition_penalty, ...), so everything that changes the
    distribution is pinned here; sampling warpers are passed as logits processors instead
    (after the logprob recorder). ``eos_token_id=[]`` (not ``None``, which would be filled
    in) is how ``ignore_eos`` disables stopping at EOS.
    """
    kwargs: dict[str, Any] = dict(
        max_new_tokens=params.max_new_tokens, do_sample=not greedy, num_beams=1,
        repetition_penalty=1.0, no_repeat_ngram_size=0, min_length=0, pad_token_id=pad_id,
        eos_token_id=[] if params.ignore_eos else eos_ids, use_cache=True,
        return_dict_in_generate=False)
    if not greedy:
        # Neutral values: the real temperature/top-k/top-p come as processors.
        kwargs.update(temperature=1.0, top_k=0, top_p=1.0)
    return kwargs


# ------------------------------------------------------------------------------------------
# generate() hooks
# ------------------------------------------------------------------------------------------


class _ChosenLogprobs:
    """Logits processor that records log p(chosen token) under the raw model distribution.

    Placed first among the processors, it sees unmodified logits at each step; the token
    chosen at step t is only known at step t+1 (as ``input_ids[:, -1]``), so one step of
    log-softmax is kept and the last step is settled by :meth:`finish`. Memory: one
    ``batch x vocab`` row at a time, never the whole ``steps x batch x vocab`` history.
    """

    def __init__(self) -> None:
        self.prev: torch.Tensor | None = None
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import torch

        if self.prev is not None:
            self.steps.append(self.prev.gather(1, input_ids[:, -1:]).squeeze(1))
        self.prev = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, sequences: torch.Tensor) -> torch.Tensor:
        """``batch x generated`` logprobs of the generated tokens."""
        import torch

        if self.prev is not None:
            self.steps.append(self.prev.gather(1, sequences[:, -1:]).squeeze(1))
            self.prev = None
        return torch.stack(self.steps, dim=1)


class _StopOnStrings:
    """Stopping criterion: a row is done once its generated text contains a stop string.

    Decodes only the generated tail that could hold a stop string (a token is at least one
    byte, a character at most four), never the prompt, so stop strings inside the prompt
    (e.g. few-shot "Question:" blocks) do not end generation.
    """

    def __init__(self, tokenizer: Any, stops: tuple[str, ...], prompt_len: int) -> None:
        self.tokenizer = tokenizer
        self.stops = stops
        self.prompt_len = prompt_len
        self.window = 4 * max(len(s) for s in stops) + 1

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        import torch

        tails = input_ids[:, self.prompt_len:][:, -self.window:].tolist()
        texts = self.tokenizer.batch_decode(tails, skip_special_tokens=True)
        done = [first_stop(t, self.stops) is not None for t in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


# ------------------------------------------------------------------------------------------
# The engine
# ------------------------------------------------------------------------------------------


@dataclass
class _Row:
    """One generation job: prompt ``prompt_idx``, its ``sample_idx``-th sample."""

    prompt_idx: int
    sample_idx: int


class HFEngine:
    """transformers-backed :class:`~raysys.engines.base.Engine`.

    ``n`` samples per prompt are produced by repeating the prompt inside the batch (one
    ``generate`` per batch, never a Python loop over samples); greedy requests generate once
    and copy. Sampling uses a private RNG seeded from ``params.seed`` (the global torch RNG
    is left untouched): the same prompts, params and ``batch_size`` give the same samples.
    """

    def __init__(self, model: ModelSpec | str, *, batch_size: int = 64, device: str | None = None,
                 dtype: str = "auto") -> None:
        self.spec = model if isinstance(model, ModelSpec) else ModelSpec(path=model)
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.device = resolve_device(device)
        wanted = self.spec.dtype if self.spec.dtype != "auto" else dtype
        self.dtype = resolve_dtype(wanted, self.device)
        self.model: Any = None
        self.tokenizer: Any = None
        self.load_weights(self.spec.path, self.spec.adapter)

    # -- lifecycle -----------------------------------------------------------------------

    def load_weights(self, model_path: str, adapter: str | None = None) -> None:
        """Serve ``model_path`` (+ LoRA ``adapter``, merged into the weights for speed)."""
        from raysys.models.loading import load_model, load_tokenizer

        trust = self.spec.trust_remote_code
        model = load_model(model_path, dtype=self.dtype, device=self.device,
                           trust_remote_code=trust, adapter=adapter, merge=adapter is not None)
        tokenizer = load_tokenizer(adapter or model_path, padding_side="left", trust_remote_code=trust)
        self.close()
        self.model, self.tokenizer = model, tokenizer
        self.model_path, self.adapter = model_path, adapter
        self.eos_ids = self._eos_ids()

    def close(self) -> None:
        """Drop the model (and free accelerator memory)."""
        if self.model is None:
            return
        self.model = None
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        for src in (self.model.generation_config.eos_token_id, self.tokenizer.eos_token_id):
            if src is None:
                continue
            ids.update(src if isinstance(src, (list, tuple)) else [src])
        return ids

    # -- generation ----------------------------------------------------------------------

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        """``params.n`` completions per prompt, in prompt order."""
        import torch

        if self.model is None:
            raise RuntimeError("HFEngine.generate: the engine was closed")
        if not prompts:
            return []
        encoded = [encode_prompt(self.tokenizer, p) for p in prompts]
        greedy = params.temperature == 0
        copies = 1 if greedy else params.n
        rows = [_Row(i, j) for i in range(len(prompts)) for j in range(copies)]
        order = length_order([len(encoded[r.prompt_idx]) for r in rows])
        results: dict[tuple[int, int], Completion] = {}
        # seed=None: draw from the process RNG, like vLLM without a per-request seed.
        rng = torch.random.fork_rng(devices=self._rng_devices()) if params.seed is not None else nullcontext()
        with rng:
            if params.seed is not None:
                torch.manual_seed(params.seed)
            for batch in chunks(order, self.batch_size):
                batch_rows = [rows[k] for k in batch]
                comps = self._generate_batch([encoded[r.prompt_idx] for r in batch_rows], params, greedy)
                for r, c in zip(batch_rows, comps):
                    results[(r.prompt_idx, r.sample_idx)] = c
        # Greedy copies are separate objects: a caller editing one must not change its twins.
        return [[replace(results[(i, 0 if greedy else j)]) for j in range(params.n)]
                for i in range(len(prompts))]

    def _rng_devices(self) -> list[int]:
        if self.device.startswith("cuda"):
            import torch

            return [torch.device(self.device).index or 0]
        return []

    def _generate_batch(self, ids: list[list[int]], params: SamplingParams,
                        greedy: bool) -> list[Completion]:
        import torch
        from transformers import (GenerationConfig, LogitsProcessorList, StoppingCriteriaList,
                                  TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)

        width = max(len(x) for x in ids)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids], device=self.device)
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=self.device)

        recorder = _ChosenLogprobs()
        # Warpers go after the recorder so logprobs are those of the raw distribution (as vLLM).
        processors: list[Any] = [recorder]
        if not greedy:
            if params.temperature != 1.0:
                processors.append(TemperatureLogitsWarper(params.temperature))
            if params.top_k > 0:
                processors.append(TopKLogitsWarper(params.top_k))
            if params.top_p < 1.0:
                processors.append(TopPLogitsWarper(params.top_p))
        criteria = [_StopOnStrings(self.tokenizer, params.stop, width)] if params.stop else []
        gen_cfg = GenerationConfig(**generation_kwargs(params, greedy, pad, sorted(self.eos_ids)))
        with torch.inference_mode():
            seqs = self.model.generate(input_ids=input_ids, attention_mask=mask, generation_config=gen_cfg,
                                       logits_processor=LogitsProcessorList(processors),
                                       stopping_criteria=StoppingCriteriaList(criteria))
        logprobs = recorder.finish(seqs).cpu().tolist()
        generated = seqs[:, width:].cpu().tolist()
        return [self._completion(g, lp, params) for g, lp in zip(generated, logprobs)]

    def _completion(self, token_ids: list[int], logprobs: list[float],
                    params: SamplingParams) -> Completion:
        """Trim padding/EOS/stop strings from one generated row, vLLM-style."""
        finish, hit_eos = "length", False
        if not params.ignore_eos:
            token_ids, hit_eos = cut_at_eos(token_ids, self.eos_ids)
            finish = "stop" if hit_eos else finish
        # As vLLM: the EOS token is in token_ids but never in the text (even a non-special one).
        text = self.tokenizer.decode(token_ids[:-1] if hit_eos else token_ids, skip_special_tokens=True)
        # vLLM's incremental detokenizer never emits the bytes of an unfinished UTF-8 character
        # at the end of the output; decode() renders them as U+FFFD. Drop those, as vLLM does.
        text = text.rstrip("\ufffd")
        cut = first_stop(text, params.stop) if params.stop else None
        if cut is not None:
            token_ids = token_ids[:self._tokens_to_stop(token_ids, params.stop)]
            text, finish = text[:cut], "stop"
        token_logprobs = [float(x) for x in logprobs[:len(token_ids)]]
        return Completion(text=text, token_ids=token_ids, finish_reason=finish,
                          cumulative_logprob=sum(token_logprobs) if params.logprobs else None,
                          token_logprobs=token_logprobs if params.logprobs else None)

    def _tokens_to_stop(self, token_ids: list[int], stops: tuple[str, ...]) -> int:
        """The shortest prefix length whose text contains a stop string (binary search)."""
        lo, hi = 1, len(token_ids)
        while lo < hi:
            mid = (lo + hi) // 2
            text = self.tokenizer.decode(token_ids[:mid], skip_special_tokens=True)
            if first_stop(text, stops) is not None:
                hi = mid
            else:
                lo = mid + 1
        return lo
