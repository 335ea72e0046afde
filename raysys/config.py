"""Typed configs: dataclasses loaded from YAML, with ``--set a.b=c`` overrides.

Every error names the dotted key path and what was expected, and is raised before any work
starts (``train.lr: expected float, got 'fast'``). Sections shared across recipes live here;
a stage's own config (e.g. ``TrainConfig``) lives beside the stage and is composed into the
recipe's top-level config, TRL-style: one typed config per trainer/stage.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

if TYPE_CHECKING:
    from raysys.engines.base import SamplingParams

T = TypeVar("T")


class ConfigError(ValueError):
    """A config problem, always phrased as ``<key.path>: <what was expected>``."""


# --------------------------------------------------------------------------------------------
# Machinery
# --------------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp) if a is not type(None))
    if origin in (list, tuple):
        args = get_args(tp)
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


class NonFiniteFloat(float):
    """Annotation for a float field that may be ``inf`` / ``nan`` (opt-in; every other float
    field refuses them in :func:`_coerce`, so ``lr: .nan`` fails before any work)."""


# Every integer setting is a signed 64-bit integer: numpy, torch, Arrow and Ray take them as such,
# and a larger one (a typo, a pasted id) would fail inside a worker with an OverflowError.
MAX_CONFIG_INT = 2**63 - 1

# -- Upper bounds on what a config asks the machines for ----------------------------------------
# Each is far past any real experiment and below where the request itself breaks something
# (memory, Ray's placement, an engine's up-front allocation), so a value past one is a typo (an
# extra zero, `--n 1000000000000`) refused in the driver instead of a hang or a killed replica.
# Completions per prompt (sampling.n): maj@k / pass@k studies stop near k = 1,024, and one
# prompt's samples are generated together by one replica: a million is an out-of-memory there.
MAX_SAMPLES_PER_PROMPT = 4096
# Tokens (max_new_tokens, max_model_len, a training max_len): no model served here has a context
# window over 2**20 (1M) tokens, and engines size their KV cache from these before the first step.
MAX_TOKENS = 2**20
# Replicas, Ray Train workers, tensor-parallel ranks: one placement-group bundle (or GPU) each;
# Ray waits forever on a placement group larger than the cluster, and 4,096 is past any here.
MAX_REPLICAS = 4096
# Prompts per engine forward or Ray Data batch, examples per training micro-batch: 65,536 prompts
# of even 100 tokens is a KV cache of hundreds of GB.
MAX_BATCH = 2**16


def check_int_range(value: int | None, key: str, lo: int, hi: int, why: str = "") -> None:
    """``ConfigError`` naming ``key`` unless ``lo <= value <= hi`` (None passes); ``why`` says
    what the bound protects."""
    if value is not None and not lo <= value <= hi:
        raise ConfigError(f"{key}: expected {lo:,} <= value <= {hi:,}, got {value:,}"
                          + (f" ({why})" if why else ""))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return the converted value.

    Floats must be finite unless the field is annotated :class:`NonFiniteFloat`.
    """
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got null")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(e)
        if len(errors) == 1:
            # `X | None`: the error inside X names the exact key (a nested typo, a bad value).
            raise errors[0]
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if origin in (list, tuple):
        if isinstance(value, str) and get_args(tp) and get_args(tp)[0] is str:
            # `--set train.lora.target_modules=q_proj,v_proj`
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        (item_tp,) = get_args(tp)[:1] or (Any,)
        out = [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return out if origin is list else tuple(out)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected mapping, got {value!r}")
        kt, vt = get_args(tp) or (Any, Any)
        return {_coerce(k, kt, key): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected bool, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) > MAX_CONFIG_INT:
                raise ConfigError(f"{key}: {value} is out of range (a setting is a 64-bit "
                                  "integer, at most 2**63 - 1 in size)")
            return value
        raise ConfigError(f"{key}: expected int, got {value!r}")
    if tp is float or tp is NonFiniteFloat:
        number: float | None = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            # PyYAML follows YAML 1.1, where `1e-4` (no dot) is a string, not a float.
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"{key}: expected float, got {value!r}")
        if tp is float and not math.isfinite(number):
            # NaN/inf would pass every range check (NaN compares False) and fail much later.
            raise ConfigError(f"{key}: expected a finite float, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected str, got {value!r}")
    raise ConfigError(f"{key}: unsupported config type {tp!r}")


def from_dict(cls: type[T], data: Any, path: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, checking keys and types recursively.

    Dataclasses may define ``validate(self, path: str) -> None`` for value checks (ranges,
    files that must exist); it runs after construction and must raise :class:`ConfigError`.
    """
    where = path or "<config>"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    for k in data:
        if k not in fields:
            close = difflib.get_close_matches(str(k), list(fields), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(fields)})"
            raise ConfigError(f"{_join(path, str(k))}: unknown key{hint}")
    kwargs = {}
    for name, f in fields.items():
        key = _join(path, name)
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{key}: required field missing (expected {_type_name(hints[name])})")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate(path)
    return obj


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def to_dict(obj: Any) -> Any:
    """Plain-data view of a config (for ``config show`` and ``<run_dir>/config.yaml``)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def dump_yaml(obj: Any) -> str:
    return yaml.safe_dump(to_dict(obj), sort_keys=False)


def check_file(path: str | None, key: str, *, dir_ok: bool = False) -> None:
    """Raise ``ConfigError`` naming ``key`` when a configured local path is missing."""
    if path is None or path.startswith("hf://"):
        return
    p = Path(path).expanduser()
    if not dir_ok and p.is_dir():
        raise ConfigError(f"{key}: expected a file, got a directory: {path}")
    if not (p.is_file() or (dir_ok and p.is_dir())):
        kind = "file or directory" if dir_ok else "file"
        raise ConfigError(f"{key}: {kind} not found: {path}")


def check_range(value: float | None, key: str, lo: float, hi: float) -> None:
    if value is not None and not (lo <= value <= hi):
        raise ConfigError(f"{key}: expected a value in [{lo}, {hi}], got {value}")


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
        check_int_range(self.max_model_len, _join(path, "max_model_len"), 1, MAX_TOKENS,
                        "no model here has a longer context; engines allocate for it up front")
        # config.json and safetensors headers only: a broken dir fails here, not in a worker
        from raysys.models.loading import check_model_spec
        check_model_spec(self, path or "model")


@dataclass
class DatasetSpec:
    """A dataset source. ``name`` picks the loader (see ``raysys.data.sources``)."""

    name: str                                   # gsm8k, math, math500, w2s, olympiad, jsonl, synthetic
    path: str | None = None                     # local JSONL/parquet, or hf://owner/name
    limit: int | None = None
    fields: dict[str, str] = field(default_factory=dict)   # generic loader: our column -> theirs
    options: dict[str, Any] = field(default_factory=dict)  # loader-specific (synthetic knobs, ...)

    def validate(self, path: str) -> None:
        from raysys.data.sources import check_options
        check_options(self, path or "data")        # the name, and each option's type and range
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"{_join(path, 'limit')}: expected a positive int, got {self.limit}")
        if self.name != "synthetic" and self.path is None:
            raise ConfigError(f"{_join(path, 'path')}: required for dataset '{self.name}'")
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
        check_range(self.top_p, _join(path, "top_p"), 0.0, 1.0)
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
