"""Typed configs: dataclasses loaded from YAML, with ``--set a.b=c`` overrides.

Every error names the dotted key path and what was expected, and is raised before any work
starts (``train.lr: expected float, got 'fast'``). Sections shared across recipes live here;
a stage's own config (e.g. ``TrainConfig``) lives beside the stage and is composed into the
recipe's top-level config, TRL-style: one typed config per trainer/stage.

This layer checks values (types, ranges, paths that must exist) and imports nothing above it:
what needs a model dir's or a data file's contents, the cluster or an engine's rules is checked
by :mod:`raysys.preflight` before any work. The machinery (``from_dict``, ``to_dict``, the value
checks and bounds) lives in :mod:`raysys.config_dataclass` and is re-exported here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from raysys.config_dataclass import (MAX_BATCH, MAX_CONFIG_INT, MAX_REPLICAS,  # noqa: F401
                                     MAX_SAMPLES_PER_PROMPT, MAX_TOKENS, NonFiniteFloat, T,
                                     _coerce, _join, _type_name, check_file, check_int_range,
                                     check_range, dump_yaml, find_sections, from_dict, to_dict)
from raysys.errors import ConfigError  # noqa: F401 - re-exported: defined with every user error

if TYPE_CHECKING:
    from raysys.engines.base import SamplingParams


# --------------------------------------------------------------------------------------------
# Shared sections
# --------------------------------------------------------------------------------------------


@dataclass
class ModelSpec:
    """A model: an HF directory, a hub id (``owner/name``), or ``tiny`` (built locally)."""

    path: str
    adapter: str | None = None          # a LoRA adapter dir applied on top of ``path``
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    trust_remote_code: bool = False      # never on unless the config says so
    max_model_len: int = 2048

    def validate(self, path: str) -> None:
        p = Path(self.path).expanduser()
        looks_local = self.path.startswith((".", "/", "~")) or p.exists()
        if looks_local and not p.is_dir():
            raise ConfigError(f"{_join(path, 'path')}: model directory not found: {self.path}")
        check_file(self.adapter, _join(path, "adapter"), dir_ok=True)
        if self.adapter is not None:
            a = Path(self.adapter).expanduser()
            if a.is_dir() and not (a / "adapter_config.json").is_file():
                raise ConfigError(f"{_join(path, 'adapter')}: {a}: not a LoRA adapter dir (no "
                                  "adapter_config.json)")
        check_int_range(self.max_model_len, _join(path, "max_model_len"), 1, MAX_TOKENS,
                        "no model here has a longer context; engines allocate for it up front")
        # What is inside the dirs (config.json against the safetensors headers, the tokenizer)
        # is read by the preflight (raysys.preflight / models.loading.check_config_models),
        # not here: this layer imports nothing above it.


@dataclass
class DatasetSpec:
    """A dataset source. ``name`` picks the loader (see ``raysys.data.sources``)."""

    name: str                                   # gsm8k, math, math500, w2s, olympiad, jsonl, synthetic
    path: str | None = None                     # local JSONL/parquet, or hf://owner/name
    limit: int | None = None
    fields: dict[str, str] = field(default_factory=dict)   # generic loader: our column -> theirs
    options: dict[str, Any] = field(default_factory=dict)  # loader-specific (synthetic knobs, ...)

    def validate(self, path: str) -> None:
        # The name, each option's type and range and whether the source needs a path are the
        # data layer's (data.sources.check_options), checked by every command that loads
        # data and by the run preflight, before Ray starts.
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(f"{_join(path, 'name')}: expected a dataset name, got {self.name!r}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"{_join(path, 'limit')}: expected a positive int, got {self.limit}")
        check_file(self.path, _join(path, "path"), dir_ok=True)


@dataclass
class SamplingConfig:
    """How a stage samples: ``n`` completions per prompt; temperature 0 is greedy."""

    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = -1
    max_new_tokens: int = 512
    stop: list[str] = field(default_factory=list)
    seed: int = 0

    def params(self, default_stop: list[str] | tuple[str, ...] = ()) -> SamplingParams:
        """The engine-level :class:`~raysys.engines.base.SamplingParams` this section asks for
        (the one derived type); ``stop`` falls back to ``default_stop`` (the template's)."""
        from raysys.engines.base import SamplingParams

        return SamplingParams(n=self.n, temperature=self.temperature, top_p=self.top_p,
                              top_k=self.top_k, max_new_tokens=self.max_new_tokens,
                              stop=tuple(self.stop or default_stop), seed=self.seed)

    def validate(self, path: str) -> None:
        if self.n < 1:
            raise ConfigError(f"{_join(path, 'n')}: expected n >= 1, got {self.n}")
        check_int_range(self.n, _join(path, "n"), 1, MAX_SAMPLES_PER_PROMPT,
                        "completions per prompt: one replica generates a prompt's samples together")
        if self.temperature < 0:
            raise ConfigError(f"{_join(path, 'temperature')}: expected >= 0, got {self.temperature}")
        # What every engine accepts (vLLM's SamplingParams rules, which HF's warpers share or
        # would silently misread): a nucleus that keeps something, top-k off (-1, 0) or >= 1,
        # stop strings that are not empty (an empty one ends every completion at once).
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"{_join(path, 'top_p')}: expected 0 < top_p <= 1 (1 = off), got "
                              f"{self.top_p}")
        if self.top_k < -1:
            raise ConfigError(f"{_join(path, 'top_k')}: expected -1 or 0 (off) or a count >= 1, "
                              f"got {self.top_k}")
        for i, stop in enumerate(self.stop):
            if stop == "":
                raise ConfigError(f"{_join(path, 'stop')}[{i}]: an empty stop string would end "
                                  "every completion before its first token; remove it")
        if self.max_new_tokens < 1:
            raise ConfigError(f"{_join(path, 'max_new_tokens')}: expected >= 1, got {self.max_new_tokens}")
        check_int_range(self.max_new_tokens, _join(path, "max_new_tokens"), 1, MAX_TOKENS,
                        "no model here has a longer context; engines allocate for it up front")


@dataclass
class EngineConfig:
    kind: Literal["auto", "vllm", "hf", "guided"] = "auto"   # guided: LLM2 verifier-guided HF loop
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.85   # on CPU vLLM reads this as a KV-cache fraction; keep small
    batch_size: int = 64                   # HF / guided engine prompts per forward
    enforce_eager: bool = False
    max_loras: int = 1
    max_lora_rank: int = 64
    # Guided decoding (kind "guided") only:
    verifier: str | None = None            # None; the saved TokenVerifier dir (required for guided)
    beta: float = 0.25                     # 0.25 (authors' script); candidate logit += beta * score
    alpha: float = 0.1                     # 0.1 (authors' script); candidates: p >= alpha * p_max
    top_k_candidates: int = 0              # 0 = no cap; else at most the top-k alpha-plausible tokens

    def validate(self, path: str) -> None:
        check_range(self.gpu_memory_utilization, _join(path, "gpu_memory_utilization"), 0.01, 1.0)
        if self.tensor_parallel_size < 1:
            raise ConfigError(f"{_join(path, 'tensor_parallel_size')}: expected >= 1")
        check_int_range(self.tensor_parallel_size, _join(path, "tensor_parallel_size"), 1,
                        MAX_REPLICAS, "one GPU per rank")
        check_int_range(self.batch_size, _join(path, "batch_size"), 1, MAX_BATCH,
                        "prompts per forward")
        if self.kind == "guided" and not self.verifier:
            raise ConfigError(f"{_join(path, 'verifier')}: kind 'guided' needs a verifier dir")
        if not 0 <= self.beta < float("inf"):       # also refuses NaN
            raise ConfigError(f"{_join(path, 'beta')}: expected a finite number >= 0, got {self.beta}")
        if not 0 < self.alpha <= 1:
            raise ConfigError(f"{_join(path, 'alpha')}: expected 0 < alpha <= 1, got {self.alpha}")
        if self.top_k_candidates < 0:
            raise ConfigError(f"{_join(path, 'top_k_candidates')}: expected >= 0 (0 = no cap), "
                              f"got {self.top_k_candidates}")


@dataclass
class RoleResources:
    """One role's actor group (``cluster.roles.<role>``): replicas and resources per replica."""

    replicas: int = 1
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 0.0

    def validate(self, path: str) -> None:
        if self.replicas < 1:
            raise ConfigError(f"{_join(path, 'replicas')}: expected >= 1, got {self.replicas}")
        check_int_range(self.replicas, _join(path, "replicas"), 1, MAX_REPLICAS,
                        "one placement-group bundle each")
        for name in ("cpus_per_replica", "gpus_per_replica"):
            v = getattr(self, name)
            if not 0 <= v < float("inf"):
                raise ConfigError(f"{_join(path, name)}: expected a finite value >= 0, got {v}")
        if self.cpus_per_replica == 0 and self.gpus_per_replica == 0:
            # Ray places no bundle that reserves nothing; a small fraction (0.01) shares a CPU
            raise ConfigError(f"{_join(path, 'cpus_per_replica')}: expected > 0 when "
                              "gpus_per_replica is 0 (a replica must reserve something to be placed)")

    def bundle(self) -> dict[str, float]:
        """One placement-group bundle for a replica; zero-sized resources are left out."""
        out = {"CPU": float(self.cpus_per_replica)}
        if self.gpus_per_replica > 0:
            out["GPU"] = float(self.gpus_per_replica)
        return out


# The role groups recipes start (``RoleGroups.get``): samplers (generation, evaluation, the
# critique actor), the critic, LLM2's verifier-guided decoder and its token explorer.
ROLES = ("sampler", "critic", "decoder", "explorer")


@dataclass
class ClusterConfig:
    address: str | None = None             # None: local Ray (or "auto" when RAY_ADDRESS is set)
    replicas: int = 1                      # sampler replicas (Ray Data actors / SamplerActors)
    gpus_per_replica: float = 0.0          # 0 on CPU; tensor_parallel_size on GPU clusters
    cpus_per_replica: float = 1.0
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    batch_size: int = 64                   # Ray Data batch size for sampling
    max_restarts: int = 3                  # sampler actor restarts
    num_cpus: int | None = None            # local Ray only: cap CPUs
    # How role groups (ROLES: sampler, critic, decoder, explorer) share the cluster:
    #   alternate: one group alive at a time, all stopped before a training stage (default: fits
    #              the smallest machine; models reload between stages);
    #   split:     each role has its own replicas, alive at once and through training where they
    #              fit beside each other and the training stage (otherwise stopped first, with
    #              one warning);
    #   colocate:  replica i of every role shares placement bundle i (e.g. actor and critic on
    #              the same GPUs), alive at once and, where the training stage fits, through it.
    placement: Literal["alternate", "split", "colocate"] = "alternate"
    # Per-role resources, keyed by a name in ROLES; a role not listed uses replicas /
    # cpus_per_replica / gpus_per_replica.
    roles: dict[str, RoleResources] = field(default_factory=dict)
    # Seconds the driver waits for the next result of an actor group (sampling, critique,
    # exploration, weight loads) before the stage fails with a StageError naming it: a hung
    # replica or collective surfaces instead of stalling the run forever.
    stall_timeout_s: float = 1800.0
    # Where the run's files live for the other nodes (raysys.distributed.run_store):
    #   auto:   a probe task on every node reads a token written in the run dir; if all see it
    #           (one node, NFS/EFS), nodes use paths; if not, models, outputs and checkpoints
    #           travel through Ray (a store actor on the driver's node, a cache on each node);
    #   shared: the same probe must pass, else one error names the nodes that do not see it;
    #   ray:    through Ray even when the disk is shared.
    storage: Literal["auto", "shared", "ray"] = "auto"

    def validate(self, path: str) -> None:
        if self.replicas < 1:
            raise ConfigError(f"{_join(path, 'replicas')}: expected >= 1, got {self.replicas}")
        RoleResources(self.replicas, self.cpus_per_replica, self.gpus_per_replica).validate(path)
        check_int_range(self.batch_size, _join(path, "batch_size"), 1, MAX_BATCH,
                        "prompts per Ray Data batch")
        for name in self.roles:     # a misspelt role would otherwise be ignored silently
            if name not in ROLES:
                raise ConfigError(f"{_join(path, 'roles')}.{name}: unknown role (known: "
                                  f"{', '.join(ROLES)})")
        if not (math.isfinite(self.stall_timeout_s) and self.stall_timeout_s > 0):
            raise ConfigError(f"{_join(path, 'stall_timeout_s')}: expected a finite number > 0, "
                              f"got {self.stall_timeout_s}")

    def role(self, name: str) -> RoleResources:
        """Resources of role ``name``'s group: its ``roles`` entry or the cluster defaults."""
        if name in self.roles:
            return self.roles[name]
        return RoleResources(self.replicas, self.cpus_per_replica, self.gpus_per_replica)


# --------------------------------------------------------------------------------------------
# The inputs a config names (so its outputs can be checked against them before any work)
# --------------------------------------------------------------------------------------------

# Fields of any section that name a local file or directory the run reads. ``model`` / ``data``
# are TrainConfig's (set by ``raysys train``; a recipe stage fills them itself); the rest are
# the recipes' precomputed inputs (weak labels, LLM2 pairs and verifier, critique seed file) and
# eval's demos. A new input field must be added here for its outputs to be checked against it.
INPUT_FIELDS = ("model", "data", "adapter", "verifier", "demos", "weak_outputs", "pairs_file",
                "seed_file", "corpus")


def _local_model(path: str) -> bool:
    """A ModelSpec/TrainConfig model value that is a local path: not the ``tiny`` sentinel and
    not a hub id (``owner/name``, fetched into the HF cache), as ``models.loading`` decides."""
    if path == "tiny":
        return False
    return path.startswith((".", "/", "~")) or Path(path).expanduser().exists()


def config_inputs(cfg: Any, key: str = "") -> dict[str, str]:
    """Every local file or directory a validated config reads, as ``{key path: path}``: model
    dirs and adapters (``ModelSpec``), dataset files and dirs (``DatasetSpec``, not ``hf://``),
    and the fields in :data:`INPUT_FIELDS` of any section. Walks nested dataclasses, dicts and
    lists, like ``models.loading.check_config_models``. Outputs (``run_dir``, ``tiny_cache``,
    ``out``) are not inputs."""
    found: dict[str, str] = {}
    if isinstance(cfg, ModelSpec):
        if _local_model(cfg.path):
            found[_join(key, "path")] = cfg.path
        if cfg.adapter:
            found[_join(key, "adapter")] = cfg.adapter
    elif isinstance(cfg, DatasetSpec):
        if cfg.path and "://" not in cfg.path:
            found[_join(key, "path")] = cfg.path
    elif dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        for f in dataclasses.fields(cfg):
            value = getattr(cfg, f.name)
            if isinstance(value, str):
                if f.name in INPUT_FIELDS and value and (f.name != "model" or _local_model(value)):
                    found[_join(key, f.name)] = value
            else:
                found.update(config_inputs(value, _join(key, f.name)))
    elif isinstance(cfg, dict):
        for k, v in cfg.items():
            if not isinstance(v, (str, int, float, bool)) and v is not None:
                found.update(config_inputs(v, _join(key, str(k))))
    elif isinstance(cfg, (list, tuple)):
        for i, v in enumerate(cfg):
            found.update(config_inputs(v, f"{key}[{i}]"))
    return found
