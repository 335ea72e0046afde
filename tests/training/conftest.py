"""Fixtures for training tests: one Ray instance per module, and small datasets on disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from raysys.data.synthetic import make_problems

EASY = {"min_steps": 1, "max_steps": 1, "max_operand": 5, "ops": "+"}


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def sft_rows(n: int, seed: int = 0, **knobs: Any) -> list[dict[str, str]]:
    """Synthetic problems as SFT rows: prompt = question + newline, response = solution."""
    return [{"prompt": p["question"] + "\n", "response": p["solution"]}
            for p in make_problems(n, seed, **(knobs or EASY))]


def wrong_solution(solution: str, answer: str) -> str:
    """The solution with its final answer replaced by a wrong one (answer + 1)."""
    return solution.rsplit("#### ", 1)[0] + f"#### {int(answer) + 1}"


def pair_rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    """Pairs whose chosen response is correct and rejected has a wrong final answer."""
    return [{"prompt": p["question"] + "\n", "chosen": p["solution"],
             "rejected": wrong_solution(p["solution"], p["answer"])}
            for p in make_problems(n, seed, **EASY)]


def token_pair_rows(n: int, tokenizer: Any, seed: int = 0) -> list[dict[str, Any]]:
    """LLM2 token pairs: at each digit of the assistant's answer, gt digit vs a wrong digit."""
    from raysys.training.collators import render_chat_ids

    digit_ids = {tokenizer.convert_tokens_to_ids(str(d)): d for d in range(10)}
    by_digit = {d: i for i, d in digit_ids.items()}
    rows = []
    for p in make_problems(n, seed, **EASY):
        messages = [{"role": "user", "content": p["question"]},
                    {"role": "assistant", "content": p["solution"]}]
        ids = render_chat_ids(messages, tokenizer)
        start = len(ids) - len(tokenizer(p["solution"], add_special_tokens=False)["input_ids"]) - 2
        samples = [[pos, tok, by_digit[(digit_ids[tok] + 3) % 10]]
                   for pos, tok in enumerate(ids) if pos >= start and tok in digit_ids]
        rows.append({"messages": json.dumps(messages), "samples": samples})
    return rows


@pytest.fixture(scope="module")
def ray_local():
    """A small local Ray instance shared by one test module, always shut down."""
    import ray

    from raysys.distributed.ray_init import dashboard_init_kwargs

    ray.init(address="local", num_cpus=2, object_store_memory=200 * 1024**2,
             **dashboard_init_kwargs(False), log_to_driver=False)
    yield
    ray.shutdown()


def greedy_texts(model_dir: Path, prompts: list[str], max_new_tokens: int = 16) -> list[str]:
    """Greedy completions of ``prompts`` by the model (or adapter) dir, batched, left-padded."""
    import torch

    from raysys.models.loading import load_model, load_tokenizer

    model = load_model(str(model_dir), dtype="float32")
    tok = load_tokenizer(str(model_dir), padding_side="left")
    enc = tok(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id)
    return tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def greedy_accuracy(model_dir: Path, problems: list[dict[str, Any]]) -> float:
    """Fraction of problems whose greedy completion's final answer is correct (the grader)."""
    from raysys.grading import grade

    texts = greedy_texts(model_dir, [p["question"] + "\n" for p in problems])
    return sum(grade(t, p["answer"])[1] for t, p in zip(texts, problems)) / len(problems)
