"""The LLM2 and critique configs: the real-model configs load once their paths are set, and bad
values are one ConfigError naming the key, before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from raysys.config import ConfigError
from raysys.recipes import load_run_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SEED_FILE = Path(__file__).resolve().parents[1] / "critique" / "fixtures" / "tiny-gsm8k-sftdata_0_new.json"


def test_real_model_configs_load_with_paths_set(tiny_model_dir: Path, shared_data_dir: Path) -> None:
    llm2 = load_run_config(CONFIGS / "llm2_gsm8k.yaml", [f"models.llm.path={tiny_model_dir}"])
    assert (llm2.decode.beta, llm2.decode.alpha, llm2.decode.maj_k) == (0.25, 0.1, 20)
    assert llm2.verifier_train.kind is None and llm2.verifier_train.lr == 2e-5
    for name in ("critique_gsm8k", "critique_math"):
        cfg = load_run_config(CONFIGS / f"{name}.yaml", [
            f"models.actor.path={tiny_model_dir}", f"models.critic.path={tiny_model_dir}",
            f"data.seed_file={SEED_FILE}"])
        assert (cfg.loop.sample_num, cfg.loop.temperature, cfg.loop.reserved_new_data,
                cfg.loop.iterations) == (5, 0.7, 1, 3)
        assert cfg.cluster.placement == "split" and cfg.style == "authors"


@pytest.mark.parametrize("name, sets, message", [
    ("critique_demo_quick", ["test_time.gates=[critic, nope]"], r"test_time\.gates\[1\]: expected one of"),
    ("critique_demo_quick", ["loop.temperature=0"], r"loop\.temperature: expected a finite value > 0"),
    ("critique_demo_quick", ["loop.train.model=/x"], r"loop\.train\.model: (set by the recipe|model directory)"),
    ("critique_demo_quick", ["greedy.temperature=0.5"], r"greedy\.temperature: expected 0"),
    ("llm2_demo_quick", ["engine.kind=guided", "engine.verifier=/tmp"], r"engine\.kind: the run's plain engine"),
    ("llm2_demo_quick", ["decode.beta=-1"], r"decode\.beta: expected a finite value >= 0"),
    ("llm2_demo_quick", ["decode.maj_k=1"], r"decode\.maj_k: expected 0 \(off\) or >= 2"),
    ("llm2_demo_quick", ["explore.mode=contrast"], r"explore\.mode: 'contrast' needs an expert model"),
    ("llm2_demo_quick", ["tiny.pretrain_format=chat"], r"tiny\.pretrain_format: expected 'qa' with template 'zero_shot'"),
    ("llm2_demo_quick", ["template=chat"], r"tiny\.pretrain_format: expected 'chat' with template 'chat'"),
    ("llm2_demo_quick", ["template=few_shot"], r"template"),
    ("llm2_demo_quick", ["verifier_train.kind=sft"], r"verifier_train\.kind: set by the recipe"),
    ("critique_demo_quick", ["loop.critiques=gold", "loop.stream=true", "cluster.placement=split"],
     r"loop\.critiques: 'gold' needs .* loop\.stream false"),
    ("critique_demo_quick", ["loop.critiques=oracle"], r"loop\.critiques"),
    ("critique_demo_quick", ["loop.keep=steps"], r"loop\.keep"),
])
def test_bad_values_name_the_key(name: str, sets: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_run_config(CONFIGS / f"{name}.yaml", sets)


@pytest.mark.parametrize("setting, message", [
    ("test_time.gates=[gold]", r"test_time\.gates: 'gold' needs the synthetic"),
    ("loop.critiques=gold", r"loop\.critiques: 'gold' needs the synthetic"),
])
def test_gold_settings_need_the_synthetic_task(tiny_model_dir: Path, tmp_path: Path,
                                               setting: str, message: str) -> None:
    # a GSM8K-format file of our own: the check must not depend on ../shared/data being there
    gsm8k = tmp_path / "gsm8k.jsonl"
    gsm8k.write_text('{"question": "2+3?", "answer": "2+3=5\\n#### 5"}\n')
    with pytest.raises(ConfigError, match=message):
        load_run_config(CONFIGS / "critique_gsm8k.yaml", [
            f"models.actor.path={tiny_model_dir}", f"models.critic.path={tiny_model_dir}",
            f"data.train.path={gsm8k}", f"data.test.path={gsm8k}",
            f"data.seed_file={SEED_FILE}", setting])


def test_gold_loop_critiques_are_accepted_on_the_synthetic_task() -> None:
    assert load_run_config(CONFIGS / "critique_demo_quick.yaml",
                           ["loop.critiques=gold"]).loop.critiques == "gold"


@pytest.mark.parametrize("sets, message", [
    (["data.seed_file={seed}", "data.seed_calc=true"], r"data\.seed_calc: set seed_file or seed_calc"),
    (["data.seed_file=null"], r"models\.critic: required .* or data\.seed_calc"),
    (["data.seed_file=null", "data.seed_calc=true", "critic_train.mix={{gold: 2, sampled: 3}}"],
     r"critic_train\.mix: with data\.seed_calc only gold, corrupted"),
])
def test_seed_calc_settings(tiny_model_dir: Path, tmp_path: Path, sets: list[str],
                            message: str) -> None:
    gsm8k = tmp_path / "gsm8k.jsonl"
    gsm8k.write_text('{"question": "2+3?", "answer": "2+3=5\\n#### 5"}\n')
    base = [f"models.actor.path={tiny_model_dir}", f"data.train.path={gsm8k}",
            f"data.test.path={gsm8k}", f"data.seed_file={SEED_FILE}", "models.critic=null"]
    with pytest.raises(ConfigError, match=message):
        load_run_config(CONFIGS / "critique_gsm8k.yaml",
                        base + [s.format(seed=SEED_FILE) for s in sets])
    # seed_calc alone trains the critic here: no models.critic needed
    cfg = load_run_config(CONFIGS / "critique_gsm8k.yaml", base + [
        "data.seed_file=null", "data.seed_calc=true", "seed_sft.refine_mix={corrupted: 4}",
        "critic_train.mix={gold: 2, corrupted: 2}"])
    assert cfg.data.seed_calc and cfg.models.critic is None


def test_seed_calc_refused_on_the_synthetic_task() -> None:
    with pytest.raises(ConfigError, match=r"data\.seed_calc: for real GSM8K"):
        load_run_config(CONFIGS / "critique_demo_quick.yaml", ["data.seed_calc=true"])
