"""LLM2 and critique-in-the-loop in this process (no Ray, HF engine) on the real pretrained
model, SmolLM2-135M-Instruct (``real_model_dir``: `make real-model`), on a handful of real GSM8K
problems: the recipes' own code on a BPE tokenizer that merges digits, a ChatML template with a
default system turn, EOS = PAD = ``<|im_end|>`` and tied embeddings through LoRA training and
merge. The Ray + vLLM runs of the same configs are tests/e2e/test_real_model.py (extended).

Skips with the reason when the model (``make real-model``) or ``../shared/data`` is missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raysys.data.io import read_stage
from recipe_runs import CONFIGS  # noqa: F401

# llm2 91 s, critique 296 s on an idle 2-core machine, plus `make real-model` (~2 min): beyond
# CI's 45 minutes (43 without them), so in `make test-extended`.
pytestmark = [pytest.mark.slow, pytest.mark.extended, pytest.mark.timeout(1200)]


def _run(config: str, run_dir: Path, overrides: list[str]):  # type: ignore[no-untyped-def]
    from raysys.recipes import get_recipe, load_run_config

    cfg = load_run_config(CONFIGS / config, [f"run_dir={run_dir}", "engine.kind=hf",
                                             "cluster.cpus_per_replica=1", *overrides])
    return get_recipe(cfg.recipe).run(cfg, in_process=True)


def _complete(run_dir: Path) -> dict:
    stages = json.loads((run_dir / "state.json").read_text())["stages"]
    assert stages and all(e["status"] == "complete" for e in stages.values()), \
        {k: e["status"] for k, e in stages.items() if e["status"] != "complete"}
    return stages


@pytest.fixture(scope="module")
def llm2_run(real_model_dir: Path, shared_data_dir: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("real_llm2") / "run"
    _run("real_llm2_quick.yaml", run_dir, [
        f"models.llm.path={real_model_dir}",
        f"data.explore.path={shared_data_dir / 'gsm8k/train.jsonl'}", "data.explore.limit=6",
        f"data.test.path={shared_data_dir / 'gsm8k/test.jsonl'}", "data.test.limit=3",
        "data.heldout=2", "verifier_train.max_steps=2", "greedy.max_new_tokens=48"])
    return run_dir


def test_llm2_token_pairs_sit_on_the_chat_renderings_bpe_tokens(llm2_run: Path,
                                                                 real_model_dir: Path) -> None:
    from raysys.models.loading import load_tokenizer
    from raysys.training.collators import render_pair_ids

    _complete(llm2_run)
    tok = load_tokenizer(str(real_model_dir))
    rows = read_stage(llm2_run / "iter_0" / "token_pairs", "token_pairs").to_pylist()
    assert len(rows) == 6 and sum(bool(r["samples"]) for r in rows) >= 5
    header = tok("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    for r in rows:
        messages = json.loads(r["messages"]) if isinstance(r["messages"], str) else r["messages"]
        ids = render_pair_ids(messages, tok, r["render"])
        assert r["render"] == "chat" and ids[0] == tok.bos_token_id
        start = max(i for i in range(len(ids)) if ids[i:i + len(header)] == header) + len(header)
        for pos, gold, neg in r["samples"]:
            # on the answer's own tokens, never the prompt's, and never a pad/EOS negative
            assert start <= pos < len(ids) and ids[pos] == gold and neg != gold
            assert neg not in (tok.eos_token_id, tok.pad_token_id)
    result = json.loads((llm2_run / "result.json").read_text())
    assert [r["model"] for r in result["evals"]][0] == "plain"
    assert all(r["n"] == 3 for r in result["evals"])


@pytest.fixture(scope="module")
def critique_run(real_model_dir: Path, shared_data_dir: Path,
                 tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("real_critique") / "run"
    _run("real_critique_quick.yaml", run_dir, [
        f"models.actor.path={real_model_dir}",
        f"data.train.path={shared_data_dir / 'w2s/gsm8k/train_2.jsonl'}", "data.train.limit=3",
        f"data.test.path={shared_data_dir / 'gsm8k/test.jsonl'}", "data.test.limit=3",
        f"data.seed.path={shared_data_dir / 'w2s/gsm8k/train_1.jsonl'}",
        "critic_train.heldout=2", "seed_sft.train.max_steps=2", "loop.train.max_steps=2",
        "loop.sample_num=1", "greedy.max_new_tokens=64", "critique_tokens=64"])
    return run_dir


def test_critique_stages_run_and_merged_models_keep_tied_embeddings(critique_run: Path) -> None:
    _complete(critique_run)
    for model in ("critic", "actor_iter0"):
        cfg = json.loads((critique_run / "models" / model / "config.json").read_text())
        assert cfg["tie_word_embeddings"] is True
        # one copy of the embedding: a merge that untied it would save lm_head separately
        from safetensors import safe_open
        keys = set()
        for f in (critique_run / "models" / model).glob("*.safetensors"):
            with safe_open(str(f), "pt") as st:
                keys |= set(st.keys())
        assert not any(k.startswith("lm_head") for k in keys), sorted(keys)[:5]
    # the loop's critiques and each test-time gate's: one per test problem and round, none
    # longer than critique_tokens. (Their verdicts: this short SFT leaves the 135M critic
    # repeating "The correct answer is N." with no verdict line, parsed as "unknown".)
    for stage in ("iter_1/critiques", "iter_1/tt_oracle_critique", "iter_1/tt_critic_critique"):
        rows = read_stage(critique_run / stage, "critiques").to_pylist()
        assert len(rows) == 3 and all(0 < r["num_tokens"] <= 64 for r in rows), stage
        assert all(r["verdict"] in ("correct", "wrong", "unknown") for r in rows)
