"""Real servers for the operations tests, all on 127.0.0.1 and free ports: a Prefect server and a
Dask scheduler with worker processes; plus running the nightly flow in its own process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
FLOW_SCRIPT = (
    "import sys\n"
    "from flows.nightly import NightlyParams, nightly\n"
    "published = nightly(NightlyParams.model_validate_json(sys.argv[1]))\n"
    "open(sys.argv[2], 'w').write(published)\n"
)


def free_port() -> int:
    """A TCP port nobody listens on now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(check: Any, what: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{what}: not ready after {timeout:.0f} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate a process group we started (SIGTERM, then SIGKILL)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@contextmanager
def prefect_server(home: Path) -> Iterator[dict[str, str]]:
    """`prefect server start` with its own PREFECT_HOME and SQLite database; yields the client env."""
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    env = os.environ | {
        "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'server.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)
    log = open(home / "server.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    api = f"http://127.0.0.1:{port}/api"
    try:
        _wait(lambda: urllib.request.urlopen(f"{api}/health", timeout=2).status == 200,
              "prefect server", 180, proc)  # fmt: skip
        client_home = home / "client"
        client_home.mkdir(exist_ok=True)
        yield os.environ | {"PREFECT_API_URL": api, "PREFECT_HOME": str(client_home)}
    finally:
        stop(proc)
        log.close()


@contextmanager
def dask_cluster(folder: Path, n_workers: int = 2) -> Iterator[str]:
    """`dask scheduler` and `n_workers` `dask worker` processes on loopback; yields the address."""
    folder.mkdir(parents=True, exist_ok=True)
    sched_file = folder / "scheduler.json"
    procs = []
    log = open(folder / "dask.log", "wb")  # noqa: SIM115
    try:
        procs.append(subprocess.Popen(
            [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(free_port()),
             "--no-dashboard", "--scheduler-file", str(sched_file)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        ))  # fmt: skip
        _wait(sched_file.exists, "dask scheduler", 60, procs[0])
        address = json.loads(sched_file.read_text())["address"]
        for _ in range(n_workers):
            procs.append(subprocess.Popen(
                [str(BIN / "dask"), "worker", address, "--host", "127.0.0.1", "--nworkers", "1",
                 "--nthreads", "1", "--memory-limit", "1GiB", "--no-dashboard"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=folder,
            ))  # fmt: skip
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(n_workers, timeout=120)
        yield address
    finally:
        for proc in reversed(procs):
            stop(proc)
        log.close()


def start_flow(params: dict[str, Any], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """The nightly flow in its own process (own process group, so it can be killed whole)."""
    out = open(log, "wb")  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "-c", FLOW_SCRIPT, json.dumps(params), str(log.with_suffix(".result"))],
        env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO,
    )  # fmt: skip


def run_flow(params: dict[str, Any], env: dict[str, str], log: Path, timeout: float = 600) -> Path:
    """Run the nightly flow to the end; returns the published run folder."""
    proc = start_flow(params, env, log)
    try:
        code = proc.wait(timeout)
    finally:
        stop(proc)
    if code != 0:
        raise AssertionError(f"nightly flow failed ({code}):\n{log.read_text(errors='replace')[-4000:]}")
    return Path(log.with_suffix(".result").read_text())
