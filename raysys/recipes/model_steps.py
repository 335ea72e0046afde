"""Model steps of a recipe: base models (given, or tiny ones built and pre-trained here) and
training stages. Each is a model stage of the run dir (complete = renamed into place)."""

from __future__ import annotations

import logging
import os
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from raysys.config import ConfigError, ModelSpec
from raysys.data.io import read_stage, write_stage
from raysys.errors import StageError
from raysys.pipeline.run_dir import MODEL_MARKER, read_model_marker
from raysys.prompts import response_text
from raysys.recipes.steps import StepContext
from raysys.training.config import LoraConfig, TrainConfig

log = logging.getLogger(__name__)


def _key(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


@dataclass
class TinyModel:
    """Build a tiny model locally (``models.<name>.path: tiny``), optionally pre-trained on
    synthetic problems (question -> worked solution) through the project's trainer."""

    hidden: int = 128
    layers: int = 2
    heads: int = 2
    vocab_size: int = 512
    seed: int = 0
    pretrain_problems: int = 0          # 0: no pre-training
    pretrain_seed: int = 1000
    # Up to this many solved problems precede each pre-training example in the few-shot format,
    # as in the documents a real base model is pre-trained on; without them a tiny "strong"
    # model has never seen a few-shot prompt and its in-context answers are noise.
    pretrain_max_demos: int = 0
    # >= 1: no zero-shot documents, so the base model can answer when shown examples but has
    # not been taught the zero-shot format (the weak-to-strong paper's setting).
    pretrain_min_demos: int = 0
    # Knobs of the synthetic pre-training problems (min_steps, max_steps, max_operand, ops);
    # the generator's defaults (operands <= 20) otherwise.
    pretrain_options: dict[str, Any] = field(default_factory=dict)
    # qa: "Question: q\nAnswer: solution" documents; chat: the tokenizer's chat template (user
    # question, assistant solution), the format LLM2's token pairs are rendered in.
    pretrain_format: Literal["qa", "chat"] = "qa"
    pretrain: TrainConfig = field(default_factory=lambda: TrainConfig(
        lr=3e-3, lora=LoraConfig(enabled=False), merge_output=False, warmup_ratio=0.05))

    def validate(self, path: str) -> None:
        if self.hidden % 64 or self.hidden // 64 != self.heads:
            raise ConfigError(f"{_key(path, 'hidden')}: expected heads * 64 (head_dim 64), "
                              f"got hidden={self.hidden}, heads={self.heads}")
        if self.pretrain_problems < 0:
            raise ConfigError(f"{_key(path, 'pretrain_problems')}: expected >= 0")
        if self.pretrain_format == "chat" and self.pretrain_max_demos:
            raise ConfigError(f"{_key(path, 'pretrain_max_demos')}: expected 0 with "
                              "pretrain_format 'chat' (chat documents have no demonstrations)")
        if self.pretrain_max_demos < 0:
            raise ConfigError(f"{_key(path, 'pretrain_max_demos')}: expected >= 0")
        if not 0 <= self.pretrain_min_demos <= self.pretrain_max_demos:
            raise ConfigError(f"{_key(path, 'pretrain_min_demos')}: expected 0 <= value <= "
                              f"pretrain_max_demos ({self.pretrain_max_demos}), got {self.pretrain_min_demos}")
        from raysys.data.sources import SYNTHETIC_OPTIONS, check_synthetic_knobs
        for k in self.pretrain_options:
            if k not in SYNTHETIC_OPTIONS - {"n", "seed"}:
                raise ConfigError(f"{_key(path, 'pretrain_options')}.{k}: unknown option (known: "
                                  "max_operand, max_steps, min_steps, ops)")
        # types and ranges too: a wrong one would fail in pre-training, after Ray started
        check_synthetic_knobs(self.pretrain_options, _key(path, "pretrain_options"))
        self.pretrain.check_stage(_key(path, "pretrain"))


def spec_at(path: Path, like: ModelSpec) -> ModelSpec:
    """A model spec at ``path`` with ``like``'s loading options."""
    return ModelSpec(path=str(path), dtype=like.dtype, max_model_len=like.max_model_len,
                     trust_remote_code=like.trust_remote_code)


def train(ctx: StepContext, name: str, kind: str, base: ModelSpec, data: Path,
          stage: TrainConfig) -> ModelSpec:
    """A training stage: ``base`` + ``data`` -> ``models/<name>`` (merged dir, full model or
    adapter). The role groups are stopped first under ``alternate`` placement, or when the
    stage's workers would not fit beside them (:meth:`RoleGroups.before_training`). In an
    in-process context the stage trains in this process as one worker."""
    from raysys.models.loading import is_adapter_dir
    from raysys.training.trainer import train as run_train, worker_bundles

    def fn(tmp: Path) -> dict[str, Any]:
        tcfg = stage.for_stage(kind=kind, model=base.path, data=str(data), out=str(tmp), name=name,
                               trust_remote_code=base.trust_remote_code)
        if ctx.groups is not None:
            ctx.groups.before_training(worker_bundles(tcfg))
        work = ctx.rd.path / "ray_train" / name
        shutil.rmtree(work, ignore_errors=True)     # no checkpoints kept: a restart retrains
        # small built sets (few agreeing questions / pairs) must still fill one global batch
        rows = read_stage(data).num_rows
        per_batch = max(1, rows // (tcfg.num_workers * tcfg.grad_accum))
        if per_batch < tcfg.micro_batch_size:
            log.warning("%s: %d rows; micro_batch_size %d -> %d", name, rows, tcfg.micro_batch_size,
                        per_batch)
            tcfg.micro_batch_size = per_batch
        if ctx.in_process:          # the same worker loop, in this process (tiny models)
            from raysys.training.in_process import train as train_here

            # one worker: the same global batch, its share of the others as accumulation
            tcfg.grad_accum, tcfg.num_workers = tcfg.grad_accum * tcfg.num_workers, 1
            result = train_here(tcfg, run_dir=work)
        else:
            result = run_train(tcfg, run_dir=work, stall_timeout_s=ctx.cluster.stall_timeout_s,
                               storage=ctx.cluster.storage)
        if not result.completed:
            raise StageError(f"{name}: training stopped before the end (metrics {result.metrics})")
        if Path(result.out) != tmp.resolve():
            shutil.move(str(result.out), tmp)
        return {k: v for k, v in result.metrics.items() if isinstance(v, (int, float, str, bool))}
    out = ctx.rd.model_stage(name, fn=fn).path
    if is_adapter_dir(out):
        return ModelSpec(path=base.path, adapter=str(out), dtype=base.dtype,
                         max_model_len=base.max_model_len, trust_remote_code=base.trust_remote_code)
    return spec_at(out, base)


def base_model(ctx: StepContext, name: str, spec: ModelSpec, tiny: TinyModel | None) -> ModelSpec:
    """``spec`` as given, or (``path: tiny``) a tiny model built and pre-trained in the run dir."""
    if spec.path != "tiny":
        return spec
    if tiny is None:
        raise ConfigError(f"tiny.{name}: required when models.{name}.path is 'tiny'")
    return tiny_model(ctx, name, tiny, spec.max_model_len)


def tiny_model(ctx: StepContext, name: str, tiny: TinyModel, max_len: int) -> ModelSpec:
    """Build a tiny model and (optionally) pre-train it on synthetic problems.

    With ``ctx.tiny_cache`` (the recipe's ``tiny_cache`` key), a pre-trained model is kept there
    under its settings' fingerprint (``tiny-<sha>``) and a later run with the same settings
    copies it into its own ``models/<name>_pretrained`` instead of training (``raysys demo
    --recipe all`` shares the actor between weak-to-strong and critique this way). The run dir
    stays self-contained: it holds a copy, not a link.
    """
    from raysys.models.tiny import build_tiny_model

    # only whole models are shared (a LoRA adapter would need its base dir too)
    whole = tiny.pretrain_problems > 0 and (not tiny.pretrain.lora.enabled or tiny.pretrain.merge_output)
    cached = tiny_cache_entry(ctx.tiny_cache, tiny) if whole else None
    done = (ctx.rd.model_dir(f"{name}_pretrained") / MODEL_MARKER).is_file()
    if whole and (done or (cached is not None and (cached / MODEL_MARKER).is_file())):
        def copy_fn(tmp: Path) -> dict[str, Any]:     # not called when the run has its copy
            shutil.copytree(cached, tmp)
            return {**read_model_marker(cached / MODEL_MARKER).get("metrics", {}), "from_cache": str(cached)}
        out = ctx.rd.model_stage(f"{name}_pretrained", fn=copy_fn).path
        if cached is not None:
            publish_model(out, cached)     # a resumed run whose model was trained but not published
        return ModelSpec(path=str(out), max_model_len=max_len)

    def init_fn(tmp: Path) -> None:
        build_tiny_model(tmp, hidden=tiny.hidden, layers=tiny.layers, heads=tiny.heads,
                         vocab_size=tiny.vocab_size, seed=tiny.seed)
    init = ctx.rd.model_stage(f"{name}_init", fn=init_fn)
    spec = ModelSpec(path=str(init.path), max_model_len=max_len)
    if tiny.pretrain_problems == 0:
        return spec

    def corpus(out: Path) -> None:
        from raysys.data.synthetic import make_problems
        problems = make_problems(tiny.pretrain_problems, tiny.pretrain_seed, **tiny.pretrain_options)
        if tiny.pretrain_format == "chat":
            rows = chat_rows(problems, init.path)
        else:
            rows = pretrain_rows(problems, tiny.pretrain_max_demos, tiny.pretrain_seed,
                                 tiny.pretrain_min_demos)
        write_stage(out, rows, "sft")
    data = ctx.rd.stage(f"{name}_pretrain_data", kind="sft", phase="data", fn=corpus).path
    trained = train(ctx, f"{name}_pretrained", "sft", spec, data, tiny.pretrain)
    if cached is not None:
        publish_model(Path(trained.path), cached)
    return trained


def tiny_cache_entry(cache: Path | None, tiny: TinyModel) -> Path | None:
    """Where a pre-trained tiny model with these settings lives in ``cache`` (None: no cache).
    The fingerprint covers every setting (architecture, corpus, pre-training stage), so two
    configs share a model only when it would be trained identically."""
    from raysys.distributed.stage_writer import request_fingerprint

    if cache is None:
        return None
    return cache / f"tiny-{request_fingerprint({'version': 1, **asdict(tiny)})}"


def publish_model(model_dir: Path, entry: Path) -> None:
    """Copy a complete model dir to ``entry`` atomically (a temp copy renamed into place); a
    run that finds ``entry`` already there (another run published first) keeps that one."""
    if (entry / MODEL_MARKER).is_file():
        return
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = entry.parent / f".{entry.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(model_dir, tmp)
    try:
        tmp.rename(entry)
    except OSError:                      # published meanwhile by another run
        shutil.rmtree(tmp, ignore_errors=True)


def pretrain_rows(problems: list[dict[str, Any]], max_demos: int, seed: int,
                  min_demos: int = 0) -> list[dict[str, str]]:
    """SFT rows for pre-training a tiny base model: each problem's solution after its question,
    preceded by ``min_demos``..``max_demos`` other solved problems in the few-shot format
    (seeded). ``min_demos >= 1`` leaves the zero-shot format out of pre-training."""
    from raysys.prompts import build_prompt

    rng = random.Random(seed)
    rows = []
    for i, p in enumerate(problems):
        k = rng.randint(min(min_demos, max_demos), min(max_demos, len(problems) - 1))
        others = [j + (j >= i) for j in rng.sample(range(len(problems) - 1), k)]  # skip i itself
        demos = [(problems[j]["question"], problems[j]["solution"]) for j in others]
        prompt = build_prompt(p["question"], "few_shot", demos=demos) if demos else \
            build_prompt(p["question"], "zero_shot")
        rows.append({"prompt": prompt, "response": response_text(p["solution"]), "source": p["id"]})
    return rows


def chat_rows(problems: list[dict[str, Any]], model_dir: str | Path) -> list[dict[str, str]]:
    """SFT rows in the model's chat template: the user turn with the generation prompt, then
    the solution (EOS is appended by tokenization), as chat decoding and token pairs see it."""
    from raysys.models.loading import load_tokenizer
    from raysys.prompts import build_prompt

    tok = load_tokenizer(str(model_dir))
    return [{"prompt": build_prompt(p["question"], "chat", tokenizer=tok),
             "response": p["solution"].strip(), "source": p["id"]} for p in problems]
