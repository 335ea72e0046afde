"""Start or join Ray the same way everywhere: tests, the laptop demo, ``ray job submit``.

``address=None`` never silently attaches to some other cluster that happens to run on the
machine: it joins only the cluster named by ``RAY_ADDRESS`` (set by ``ray job submit``) and
otherwise starts a private local instance. A private instance never names another
instance's endpoints as its own (:func:`dashboard_init_kwargs`), so several raysys commands
can run on one machine.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from raysys.config import ClusterConfig
from raysys.distributed.local_start import LOCAL_START_ATTEMPTS, is_startup_timeout, start_local
from raysys.errors import ClusterError

log = logging.getLogger(__name__)

# Environment variables that workers need to behave like the driver (offline hubs, shared
# compile caches); propagated through the job's runtime_env when set on the driver.
PROPAGATED_ENV = (
    "TORCH_EXTENSIONS_DIR",
    "HF_HUB_OFFLINE",
    "HF_HOME",
    "TRANSFORMERS_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "RAYSYS_SHARED_DATA",
    "VLLM_CPU_KVCACHE_SPACE",
    "TOKENIZERS_PARALLELISM",
)

# How long the driver waits for a remote Ray address to accept a connection before one clear
# error (ray.init itself retries for ~30 s and then raises a long traceback).
CONNECT_TIMEOUT_ENV = "RAYSYS_RAY_CONNECT_TIMEOUT_S"
DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_PORTS = {"ray": 10001, "gcs": 6379}

# On small machines Ray would reserve 30% of RAM for the object store; sampling tables are tiny.
SMALL_MACHINE_OBJECT_STORE = 512 * 1024**2
SMALL_MACHINE_CPUS = 8

# The ports a Ray dashboard binds when none is given: 8265, else the next free of 50 retries
# (ray._private.services.start_api_server).
RAY_DASHBOARD_PORTS = range(8265, 8265 + 51)


def runtime_env_vars(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The subset of ``environ`` (default: ``os.environ``) that workers should inherit.

    Inside a ``ray job submit`` driver, keys the job's own runtime_env already sets are left
    out: Ray refuses to merge a driver runtime_env that names the same env var as the job's.
    """
    env = os.environ if environ is None else environ
    taken: set[str] = set()
    job_config = env.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if job_config:
        try:
            taken = set((json.loads(job_config).get("runtime_env") or {}).get("env_vars") or {})
        except (ValueError, AttributeError):
            taken = set()
    return {k: env[k] for k in PROPAGATED_ENV if k in env and k not in taken}


def resolve_address(address: str | None, environ: dict[str, str] | None = None) -> str:
    """Pick what ``ray.init`` connects to: ``RAY_ADDRESS`` when unset, else ``"local"``."""
    env = os.environ if environ is None else environ
    if address:
        return address
    return env.get("RAY_ADDRESS") or "local"


def address_endpoint(address: str) -> tuple[str, int] | None:
    """``host:port`` / ``ray://host[:port]`` -> ``(host, port)``; ``None`` for ``local`` and
    ``auto`` (no endpoint to probe). An ``http(s)://`` address (the dashboard / job server)
    is refused: ``ray.init`` cannot join a cluster through it."""
    if address in ("local", "auto"):
        return None
    if address.startswith(("http://", "https://")):
        raise ClusterError(f"cluster.address: {address} is a dashboard / job-server URL; "
                           "expected host:6379 or ray://host:10001 (or submit with ray job submit)")
    scheme, sep, rest = address.partition("://")
    if sep and scheme != "ray":
        raise ClusterError(f"cluster.address: {address}: expected auto, host:port or ray://host:port")
    hostport = rest if sep else address
    host, colon, port = hostport.rstrip("/").rpartition(":")
    if not colon:
        host, port = hostport, str(DEFAULT_PORTS["ray" if sep else "gcs"])
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClusterError(f"cluster.address: {address}: expected auto, host:port or ray://host:port")
    return host.strip("[]"), int(port)


def check_ray_address(address: str | None, timeout_s: float | None = None,
                      environ: dict[str, str] | None = None) -> None:
    """Raise ``ClusterError`` (one line, within ``timeout_s``) when the Ray address that
    :func:`init_ray` would join does not accept connections; cheap, so the CLI runs it before
    any work. ``local`` and ``auto`` are not probed."""
    env = os.environ if environ is None else environ
    address = resolve_address(address, env)
    endpoint = address_endpoint(address)
    if endpoint is None:
        return
    if timeout_s is None:
        timeout_s = float(env.get(CONNECT_TIMEOUT_ENV) or DEFAULT_CONNECT_TIMEOUT_S)
    t0 = time.monotonic()
    try:
        with socket.create_connection(endpoint, timeout=timeout_s):
            return
    except OSError as e:
        why = "timed out" if isinstance(e, TimeoutError) else (e.strerror or type(e).__name__)
        raise ClusterError(f"cluster.address: cannot reach Ray at {address} ({why} after "
                           f"{time.monotonic() - t0:.1f} s); start the cluster (ray start --head) "
                           "or fix the address (unset it to start a local Ray)") from None


_local_session: str | None = None    # the session of the local instance init_ray started


def started_local_instance() -> bool:
    """Whether this process is connected to a private local instance that :func:`init_ray`
    started (one node, which nothing can preempt), not to a cluster it joined. Compared by
    Ray session, so a ``ray.shutdown()`` and a new ``ray.init`` elsewhere do not inherit it."""
    import ray

    return (_local_session is not None and ray.is_initialized()
            and ray.get_runtime_context().get_session_name() == _local_session)


def local_init_kwargs(cluster: ClusterConfig, cpu_count: int | None = None) -> dict[str, Any]:
    """``ray.init`` arguments for a private local instance (bounded on small machines)."""
    cpus = cluster.num_cpus if cluster.num_cpus is not None else (cpu_count or os.cpu_count() or 1)
    kwargs: dict[str, Any] = {"num_cpus": cpus, "dashboard_host": "127.0.0.1"}
    if cpus <= SMALL_MACHINE_CPUS:
        kwargs["object_store_memory"] = SMALL_MACHINE_OBJECT_STORE
    return kwargs


def free_local_port(host: str = "127.0.0.1", avoid: range = RAY_DASHBOARD_PORTS) -> int:
    """A TCP port on ``host`` that is free now and outside ``avoid`` (the OS's ephemeral range
    normally is)."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in avoid:
            return port
    raise ClusterError(f"no free local port outside {avoid.start}-{avoid.stop - 1} on {host}")


def dashboard_init_kwargs(dashboard: bool,
                          free_port: Callable[[], int] = free_local_port) -> dict[str, Any]:
    """``ray.init`` dashboard arguments for a private local instance.

    Without its dashboard, Ray still writes the dashboard's default address (127.0.0.1:8265)
    into the instance's GCS as its State API server, although nothing of this instance listens
    there. Every ``ray.util.state`` call of the instance then reaches whichever other Ray
    instance's dashboard runs on 8265 on this machine: Ray Train's PlacementGroupCleaner asks
    that foreign instance whether this run's controller is alive, is told "no such actor", and
    removes the run's placement group mid-training ("A worker health check failed" in the other
    run; issue 28). A free port outside Ray's dashboard range is advertised instead: nothing
    answers there, so the State API is merely unavailable, as it is on an idle machine.
    With its dashboard, Ray advertises the port the dashboard really bound.
    """
    if dashboard:
        return {"include_dashboard": True}
    return {"include_dashboard": False, "dashboard_port": free_port()}


def init_ray(cluster: ClusterConfig | None = None, *, dashboard: bool = True) -> None:
    """Initialise Ray once per process; later calls are no-ops.

    ``cluster.address``: ``None`` -> ``RAY_ADDRESS`` if set, else a new local instance;
    ``"auto"`` / ``"ray://host:port"`` / ``"host:port"`` -> connect to that cluster.
    ``dashboard=False`` skips the local dashboard (tests: it costs seconds of start-up).
    """
    import ray

    from raysys.console import ray_log_to_driver, record_ray_session

    if ray.is_initialized():
        if cluster is not None and cluster.num_cpus is not None and \
                ray.cluster_resources().get("CPU") != cluster.num_cpus:
            # e.g. the second recipe of `demo --recipe all`: the running instance keeps its CPUs
            log.warning("cluster.num_cpus %s ignored: this process's Ray instance has %s CPUs",
                        cluster.num_cpus, ray.cluster_resources().get("CPU"))
        record_ray_session()    # this run's logs dir names the session it joined, too
        return
    cluster = cluster or ClusterConfig()
    address = resolve_address(cluster.address)
    # Inside a quiet CLI run, worker/actor output stays in Ray's session logs (named in
    # RUN_DIR/logs/ray_session.txt) instead of the console; --verbose streams it as before.
    kwargs: dict[str, Any] = {"address": address, "log_to_driver": ray_log_to_driver()}
    env_vars = runtime_env_vars()
    if env_vars:
        kwargs["runtime_env"] = {"env_vars": env_vars}
    if address == "local":
        kwargs.update(local_init_kwargs(cluster))
        kwargs.update(dashboard_init_kwargs(dashboard and _dashboard_available()))
    check_ray_address(address)
    try:
        if address == "local":
            ctx = start_local(ray.init, kwargs)
        else:
            ctx = ray.init(**kwargs)
    except (ConnectionError, TimeoutError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ClusterError(f"cluster.address: cannot join Ray at {address}: {first}") from None
    except Exception as e:  # noqa: BLE001 - Ray raises a bare Exception for a start-up timeout
        if address != "local" or not is_startup_timeout(e):
            raise
        raise ClusterError(f"local Ray did not start in {LOCAL_START_ATTEMPTS} tries (Ray's "
                           f"start-up timeouts; load average {os.getloadavg()[0]:.1f} on "
                           f"{os.cpu_count()} CPUs): retry when the machine is less busy") from None
    global _local_session
    _local_session = ray.get_runtime_context().get_session_name() if address == "local" else None
    record_ray_session()
    dashboard = getattr(ctx, "dashboard_url", None)
    where = "a new local instance" if address == "local" else address
    if dashboard:
        log.info("Ray started (%s); dashboard at http://%s", where, dashboard)
    else:
        log.info("Ray started (%s); no dashboard", where)


def _dashboard_available() -> bool:
    """The dashboard needs ``ray[default]`` extras; without them Ray refuses to start it."""
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        return False
    return True


def shutdown_ray() -> None:
    """Shut Ray down if this process started or joined it."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
