"""Hostile cases of two more categories for ``tests/cli/test_hostile_inputs.py`` (same ``Case``
and placeholders as ``hostile_cases.py``), every one through ``raysys run CONFIG``:

- ``unsatisfiable``: runs that can never be satisfied (issue 28, category 2): resource requests
  this machine's local Ray can never place, parallelism, LoRA targets and lengths the models'
  shapes do not allow, sampling parameters the engine refuses. Before, Ray started, stages ran,
  and the run failed later with a traceback or waited for resources forever;
- ``checked-in-driver`` (category 3's leftover): datasets whose rows or source options fail
  only when the run's problems stage loads them inside Ray, now loaded by the run preflight.

The quick demo runs on a local Ray of ``cluster.num_cpus: 8`` logical CPUs, two ``tiny`` models
(2 heads, 1,024 positions), its weak model's context 1,024 tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hostile_cases import DEMO_CFG, EVAL, GSM8K_OK, OLYMPIAD_OK, SFT_OK, TRAIN, W, Case

RUN = ["run", "{cfg}", *W, "--set"]          # argv is str.format-ed: a literal brace is {{ }}
DEMO_TEST = "  test: {name: synthetic, options: {n: 32, seed: 3, max_operand: 10}}"


def _demo_with_test(spec: str) -> Callable[[Path, Path], None]:
    """The quick demo's config with ``data.test`` replaced by ``spec`` (``--set`` would merge
    the synthetic options into it)."""
    def build(path: Path, model: Path) -> None:
        text = DEMO_CFG.read_text()
        assert DEMO_TEST in text
        path.write_text(text.replace(DEMO_TEST, f"  test: {spec}"))
    return build


LOCAL = r"this machine's local Ray \(8 CPU"

CASES: list[Case] = [
    # -- resources the local Ray can never place (it would wait for them forever) ------------
    Case("unsatisfiable", "run-replicas-beyond-cpus", [*RUN, "cluster.replicas=5"],
         rf"^error: cluster\.replicas: the sampler group asks 5 x 2 CPU = 10 CPU at once, more "
         rf"than {LOCAL}.*\(8 CPU\); Ray would wait for it forever; expected at most 4 replicas "
         r"of 2 CPU$"),
    Case("unsatisfiable", "run-gpus-per-replica", [*RUN, "cluster.gpus_per_replica=64"],
         rf"^error: cluster\.gpus_per_replica: the sampler group asks 2 CPU, 64 GPU per replica, "
         rf"more than any node of {LOCAL}"),
    Case("unsatisfiable", "run-training-workers", [*RUN, "weak_sft.train.num_workers=9"],
         r"^error: weak_sft\.train\.num_workers: training stage weak_sft\.train asks 9 x 1 CPU "
         rf"= 9 CPU at once, more than {LOCAL}.*expected at most 8 workers of 1 CPU$"),
    Case("unsatisfiable", "run-training-worker-cpus", [*RUN, "stage1.train.resources_per_worker={{CPU: 16}}"],
         r"^error: stage1\.train\.resources_per_worker: training stage stage1\.train asks 16 CPU "
         r"per worker, more than any node .*expected at most 8 CPU per worker$"),
    Case("unsatisfiable", "run-training-memory", [*RUN, "weak_sft.train.resources_per_worker={{memory: 1.0e+15}}"],
         r"^error: weak_sft\.train\.resources_per_worker: .*asks 931,322\.6 GiB memory per "
         r"worker, more than any node"),
    Case("unsatisfiable", "run-training-custom-resource", [*RUN, "stage2.train.resources_per_worker={{fpga: 1}}"],
         r"^error: stage2\.train\.resources_per_worker: .*asks 1 fpga per worker.*expected no "
         r"fpga in a worker \(there is none\)$"),
    Case("unsatisfiable", "run-training-tpu-refused", [*RUN, "weak_sft.train.resources_per_worker={{TPU: 1}}"],
         r"^error: weak_sft\.train\.resources_per_worker: Ray Train refuses it \(use_tpu is False "
         r"but TPU was found in resources_per_worker"),
    Case("unsatisfiable", "run-strict-spread-one-node", [*RUN, "cluster.placement_strategy=STRICT_SPREAD",
                                                         "--set", "cluster.replicas=2"],
         r"^error: cluster\.replicas: the sampler group puts each of its 2 replicas on its own "
         r"node \(STRICT_SPREAD\), and this machine's local Ray .* has 1 node\(s\)"),
    Case("unsatisfiable", "run-colocated-bundle", [*RUN, "cluster.placement=colocate", "--set",
                                                   "cluster.roles={{critic: {{cpus_per_replica: 7}}}}"],
         r"^error: cluster\.roles: the colocated group of sampler, critic .*asks 9 CPU per "
         r"replica, more than any node"),
    Case("unsatisfiable", "run-role-replicas", [*RUN, "cluster.roles={{explorer: {{replicas: 3, cpus_per_replica: 3}}}}"],
         r"^error: cluster\.roles\.explorer\.replicas: the explorer group asks 3 x 3 CPU = 9 CPU"),
    # -- parallelism, LoRA targets and lengths the models' shapes do not allow ---------------
    Case("unsatisfiable", "run-tp-vs-heads", [*RUN, "models.strong.path={model}", "--set", "engine.kind=vllm",
                                              "--set", "engine.tensor_parallel_size=3"],
         r"^error: engine\.tensor_parallel_size: 3 ranks cannot split the 2 attention heads of "
         r"models\.strong\.path evenly \(vLLM's rule\); expected one of 1, 2$"),
    Case("unsatisfiable", "run-lora-target-missing", [*RUN, "stage1.train.lora.target_modules=[q_proj, c_attn]"],
         r"^error: stage1\.train\.lora\.target_modules\[1\]: 'c_attn' is not a linear module of "
         r"models\.strong\.path, models\.weak\.path; expected one of down_proj, gate_proj, k_proj, "
         r"lm_head, o_proj, q_proj, up_proj, v_proj$"),
    Case("unsatisfiable", "run-max-len-beyond-positions", [*RUN, "stage1.train.max_len=4096"],
         r"^error: stage1\.train\.max_len: 4096 tokens per example is beyond the 1024 positions"),
    Case("unsatisfiable", "run-new-tokens-fill-context", [*RUN, "greedy.max_new_tokens=1024"],
         r"^error: greedy\.max_new_tokens: 1,024 new tokens never fit in the 1,024-token context "
         r"of models\.strong\.path \(its max_model_len and positions\), which holds the prompt "
         r"too; expected < 1,024$"),
    Case("unsatisfiable", "run-served-lora-rank", [*RUN, "engine.kind=vllm", "--set", "stage1.train.merge_output=false",
                                                   "--set", "stage1.train.lora.r=128"],
         r"^error: stage1\.train\.lora\.r: LoRA rank 128 is above engine\.max_lora_rank 64, so "
         r"vLLM cannot serve it"),
    Case("unsatisfiable", "run-max-lora-rank-not-vllm", [*RUN, "engine.kind=vllm", "--set",
                                                         "stage1.train.merge_output=false", "--set",
                                                         "engine.max_lora_rank=48"],
         r"^error: engine\.max_lora_rank: expected one of 1, 8, 16, 32, 64, 128, 256, 320, 512 "),
    Case("unsatisfiable", "config-show-lora-target", ["config", "show", "{cfg}", "--set",
                                                      "weak_sft.train.lora={{enabled: true, target_modules: [qkv]}}"],
         r"^error: weak_sft\.train\.lora\.target_modules\[0\]: 'qkv' is not a linear module"),
    # -- sampling parameters the engine refuses ------------------------------------------------
    Case("unsatisfiable", "run-top-p-zero", [*RUN, "greedy.top_p=0"],
         r"^error: .*greedy\.top_p: expected 0 < top_p <= 1 \(1 = off\), got 0"),
    Case("unsatisfiable", "run-top-k-below-off", [*RUN, "greedy.top_k=-5"],
         r"^error: .*greedy\.top_k: expected -1 or 0 \(off\) or a count >= 1, got -5"),
    Case("unsatisfiable", "run-empty-stop-string", [*RUN, "greedy.stop=[Question, '']"],
         r"^error: .*greedy\.stop\[1\]: an empty stop string would end every completion"),
    # -- datasets that failed only when the problems stage loaded them inside Ray -------------
    Case("checked-in-driver", "run-data-missing-field", ["run", "c.yaml", *W],
         r"^error: t\.jsonl:1: missing field 'answer' \(dataset 'gsm8k' needs it\)",
         {"t.jsonl": '{"question": "1+1?"}\n', "c.yaml": _demo_with_test("{name: gsm8k, path: t.jsonl}")}),
    Case("checked-in-driver", "run-data-filtered-empty", ["run", "c.yaml", *W],
         r"^error: o\.jsonl: no rows left after filtering \(options: \{'language': 'FR'\}\)",
         {"o.jsonl": OLYMPIAD_OK, "c.yaml": _demo_with_test("{name: olympiad, path: o.jsonl, "
                                                            "options: {language: FR}}")}),
    Case("checked-in-driver", "run-data-empty-file", ["run", "c.yaml", *W],
         r"^error: e\.jsonl: empty dataset \(no rows\)",
         {"e.jsonl": "", "c.yaml": _demo_with_test("{name: gsm8k, path: e.jsonl}")}),
    Case("checked-in-driver", "run-data-split-matches-nothing", ["run", "c.yaml", *W],
         r"^error: d: expected one data file \(\.jsonl/\.json/\.parquet\) matching split 'dev', "
         r"found: none", {"d/train.jsonl": GSM8K_OK, "d/test.jsonl": GSM8K_OK,
                          "c.yaml": _demo_with_test("{name: gsm8k, path: d, options: {split: dev}}")}),
    Case("checked-in-driver", "run-data-mapped-field-missing", ["run", "c.yaml", *W],
         r"^error: t\.jsonl:1: missing field 'a' \(mapped to column 'gold_answer'\)",
         {"t.jsonl": '{"question": "1+1?"}\n',
          "c.yaml": _demo_with_test("{name: jsonl, path: t.jsonl, fields: {gold_answer: a}}")}),
    Case("checked-in-driver", "run-hub-data-unknown-option", ["run", "c.yaml", *W],
         r"^error: data\.test\.options\.spilt: unknown option for dataset 'gsm8k' \(known: split, "
         r"strip_calc\)", {"c.yaml": _demo_with_test("{name: gsm8k, path: 'hf://owner/name', "
                                                     "options: {spilt: test}}")}),
    Case("checked-in-driver", "run-data-name-without-path", ["run", "c.yaml", *W],
         r"^error: data\.test\.path: required for dataset 'gsm8k'",
         {"c.yaml": _demo_with_test("{name: gsm8k}")}),
    # -- the same checks on `raysys train` and `raysys eval` (their own local Ray: this machine) --
    Case("unsatisfiable", "train-workers-beyond-cpus", [*TRAIN, "--data", "s.jsonl", "--workers", "64"],
         r"^error: num_workers: training stage train asks 64 x 1 CPU = 64 CPU at once, more "
         r"than this machine's local Ray .*Ray would wait for it forever", {"s.jsonl": SFT_OK}),
    Case("unsatisfiable", "train-max-len-beyond-positions", [*TRAIN, "--data", "s.jsonl", "--set", "max_len=100000"],
         r"^error: max_len: 100000 tokens per example is beyond the 1024 positions of model",
         {"s.jsonl": SFT_OK}),
    Case("unsatisfiable", "eval-vllm-temperature", [*EVAL, "--data", "gsm8k:t.jsonl", "--set",
                                                    "sampling.temperature=3", "--set", "engine.kind=vllm"],
         r"^error: sampling\.temperature: expected <= 2 with engine\.kind vllm", {"t.jsonl": GSM8K_OK}),
    Case("unsatisfiable", "eval-replicas-beyond-cpus", [*EVAL, "--data", "gsm8k:t.jsonl", "--set",
                                                        "cluster.replicas=64"],
         r"^error: cluster\.replicas: the sampler group asks 64 x 1 CPU = 64 CPU at once, more "
         r"than this machine's local Ray", {"t.jsonl": GSM8K_OK}),
]
