"""Live stage metrics read back from a real local Ray's Prometheus endpoint.

Ray is started with a known metrics export port and a 0.5 s report interval; the tests run a
real generation stage (driver-side gauges), a Ray task (a worker process's gauges) and, marked
slow, a real Ray Train run, then scrape ``http://127.0.0.1:PORT/metrics`` and compare values.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from raysys.pipeline.live_metrics import PREFIX, run_name

REPORT_INTERVAL_MS = 500
SCRAPE_TIMEOUT_S = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int, name: str, tags: dict[str, str]) -> float | None:
    """The value of sample ``ray_<name>`` whose labels include ``tags`` (None: not exported)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == PREFIX + name and all(s.labels.get(k) == v for k, v in tags.items()):
                return s.value
    return None


def wait_for(port: int, expected: dict[str, float],
             tags: dict[str, str]) -> dict[str, float | None]:
    """Scrape until every metric of ``expected`` shows its value (the exporter runs every
    ``REPORT_INTERVAL_MS``); returns the last values seen either way."""
    deadline = time.monotonic() + SCRAPE_TIMEOUT_S
    while True:
        seen = {n: scrape(port, n, tags) for n in expected}
        if all(seen[n] is not None and seen[n] == pytest.approx(v) for n, v in expected.items()):
            return seen
        if time.monotonic() > deadline:
            return seen
        time.sleep(0.25)


@pytest.fixture(scope="module")
def metrics_port() -> Iterator[int]:
    """A local Ray whose node exports metrics on a known port, every 0.5 s."""
    import ray

    from raysys.distributed.ray_init import dashboard_init_kwargs

    if ray.is_initialized():
        ray.shutdown()
    port = _free_port()
    ray.init(address="local", num_cpus=2, object_store_memory=200 * 1024**2,
             **dashboard_init_kwargs(False), log_to_driver=False, _metrics_export_port=port,
             _system_config={"metrics_report_interval_ms": REPORT_INTERVAL_MS})
    assert ray.nodes()[0]["MetricsExportPort"] == port
    yield port
    ray.shutdown()


def test_without_ray_recording_is_a_no_op_that_never_imports_ray() -> None:
    code = ("import sys\nfrom raysys.pipeline import live_metrics as m\n"
            "m.stage_progress('s', 1, 2, 3.0, 4.0, run='r')\n"
            "m.training_step('t', 1, 0.5, 0.1, None, total_steps=2)\n"
            "print('ray' in sys.modules, m._gauges)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.stdout.strip() == "False {}"


def test_run_name_is_the_recipe_run_dir_else_the_parent(tmp_path: Path) -> None:
    run = tmp_path / "w2s-run"
    (run / "iter_0" / "samples").mkdir(parents=True)
    (run / "state.json").write_text("{}")
    assert run_name(run / "iter_0" / "samples") == "w2s-run"
    assert run_name(run / "ray_train" / "sft" / "sft-files") == "w2s-run"    # need not exist
    assert run_name(tmp_path / "solo" / "out") == "solo"


def test_the_grafana_dashboard_charts_every_metric_for_the_chosen_stage_and_run() -> None:
    import re

    from raysys.pipeline.live_metrics import METRICS

    dash = json.loads((Path(__file__).resolve().parents[2] / "cluster" / "grafana-raysys.json")
                      .read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\bray_(raysys_\w+)", e)}
    assert used == set(METRICS)
    assert all('stage=~"$stage"' in e and 'run=~"$run"' in e for e in exprs)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    assert {"stage", "run"} <= set(variables)
    assert all(p["datasource"]["uid"] == "${datasource}" for p in dash["panels"])


def test_generation_stage_progress_and_throughput_are_exported(
        metrics_port: int, tiny_model_dir: Path, tmp_path: Path) -> None:
    from raysys.config import ClusterConfig, DatasetSpec, EngineConfig, ModelSpec, SamplingConfig
    from raysys.data.sources import load_problems
    from raysys.distributed.generation import LocalGroup
    from raysys.distributed.sampling import sample_problems
    from raysys.engines.hf import HFEngine

    run = tmp_path / "live-run"
    run.mkdir()
    (run / "state.json").write_text("{}")
    problems = load_problems(DatasetSpec(name="synthetic", options={"n": 6, "seed": 3}))
    manifest = sample_problems(
        problems, model=ModelSpec(path=str(tiny_model_dir)), engine=EngineConfig(),
        sampling=SamplingConfig(n=2, temperature=0.7, max_new_tokens=8, seed=1),
        cluster=ClusterConfig(batch_size=2), out_dir=run / "iter_0" / "samples",
        pool=LocalGroup(HFEngine(str(tiny_model_dir), batch_size=4)))
    m = manifest["metrics"]
    assert m["rows_generated"] == 12 and m["tokens_generated"] > 0
    tags = {"stage": "sampling", "run": "live-run"}
    seen = wait_for(metrics_port, {"raysys_stage_rows_done": 6, "raysys_stage_rows_total": 6,
                                   "raysys_stage_progress": 1.0}, tags)
    assert seen == {"raysys_stage_rows_done": 6, "raysys_stage_rows_total": 6,
                    "raysys_stage_progress": 1.0}
    rows_per_s = scrape(metrics_port, "raysys_stage_rows_per_s", tags)
    tokens_per_s = scrape(metrics_port, "raysys_stage_tokens_per_s", tags)
    assert rows_per_s is not None and rows_per_s > 0 and tokens_per_s is not None
    # Both rates share the elapsed time: their ratio is the stage's tokens per output row.
    assert tokens_per_s / rows_per_s == pytest.approx(m["tokens_generated"] / 12, rel=1e-6)


def test_a_ray_worker_process_exports_training_steps(metrics_port: int) -> None:
    import ray

    @ray.remote
    def step(n: int) -> int:
        from raysys.pipeline import live_metrics

        live_metrics.training_step("sft", n, 0.75, 0.125, 640.0, total_steps=8, run="remote")
        return os.getpid()

    assert ray.get(step.remote(2)) != os.getpid()          # recorded in a worker, not here
    tags = {"stage": "sft", "run": "remote"}
    expected = {"raysys_train_step": 2, "raysys_train_loss": 0.75,
                "raysys_train_step_time_s": 0.125, "raysys_stage_tokens_per_s": 640.0,
                "raysys_stage_progress": 0.25}
    assert wait_for(metrics_port, expected, tags) == expected


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_ray_train_run_exports_its_last_logged_step(metrics_port: int, tiny_model_dir: Path,
                                                      tmp_path: Path) -> None:
    from raysys.config import from_dict
    from raysys.data.synthetic import make_problems
    from raysys.training.config import TrainConfig
    from raysys.training.trainer import train

    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps({"prompt": p["question"] + "\n", "response": p["solution"]})
                            + "\n" for p in make_problems(32, 1)))
    cfg = from_dict(TrainConfig, {"kind": "sft", "model": str(tiny_model_dir), "data": str(data),
                                  "out": str(tmp_path / "out"), "name": "sft-live", "log_every": 1,
                                  "num_workers": 1, "micro_batch_size": 8, "max_steps": 3,
                                  "lora": {"enabled": False}})
    res = train(cfg, run_dir=tmp_path / "train-run")
    last = json.loads((res.out / "metrics.jsonl").read_text().splitlines()[-1])
    assert res.completed and last["step"] == 3
    expected = {"raysys_train_step": 3, "raysys_train_loss": last["loss"],
                "raysys_train_step_time_s": last["step_time_s"],
                "raysys_stage_tokens_per_s": last["tokens_per_s"], "raysys_stage_progress": 1.0}
    assert wait_for(metrics_port, expected, {"stage": "sft-live", "run": "train-run"}) == expected
