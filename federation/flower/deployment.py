"""Starting, checking and stopping the deployment's processes: SuperLink, SuperNodes and `flwr` CLI calls.

Used by the coordinator and site scripts, the loopback launcher, the tests and the
benchmark, so they all start Flower the same way. Every process runs in its own
session (process group), so stopping one also stops the ServerApp or ClientApp
processes it spawned; `Process.kill` is the crash (`kill -9` of the group).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import tomli_w
from omegaconf import DictConfig

BIN = Path(sys.executable).parent
"""Flower's executables live beside this interpreter; the SuperLink starts `flower-superexec` by name."""
APP_DIR = Path(__file__).resolve().parent / "app"
CONNECTION = "rarefed"
"""The connection name the `flwr` CLI uses for this coordinator (in $FLWR_HOME/config.toml)."""


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM to the process group (Flower shuts down gracefully), SIGKILL to anything left after `grace_s`."""
        family = descendants(self.pid)
        self._signal(signal.SIGTERM)
        try:
            self.popen.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
        _kill_all([self.pid, *family])

    def kill(self) -> None:
        """A crash: SIGKILL to the process and everything it spawned (Flower detaches some children into their own session)."""
        _kill_all([self.pid, *descendants(self.pid)])
        self.popen.wait(30)

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass


SUPEREXEC_POLL_ENV = "FLWR_SUPEREXEC_TASK_POLL_INTERVAL"
"""Flower's only setting for how often a SuperExec looks for a task to start a process for (default 1 s, 0.01-60)."""


def flower_env(flwr_home: str | Path, superexec_poll_s: float | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        FLWR_HOME=str(flwr_home),
        # never `uv sync` the app's dependencies at run time: every process runs in this environment
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    if superexec_poll_s is not None:  # inherited by the SuperExec the SuperLink or SuperNode starts
        env[SUPEREXEC_POLL_ENV] = f"{float(superexec_poll_s):g}"
    return env


def start(name: str, command: list[str], flwr_home: str | Path, log_path: str | Path, superexec_poll_s: float | None = None) -> Process:
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    Path(flwr_home).mkdir(parents=True, exist_ok=True)
    env = flower_env(flwr_home, superexec_poll_s)
    with log_path.open("ab") as log:
        popen = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return Process(name, popen, log_path)


def superlink_command(deploy: DictConfig, host: str, port: int) -> list[str]:
    command = [str(BIN / "flower-superlink"), "--host", str(host), "--port", str(port),
               "--database", str(Path(deploy.superlink.database).resolve()), "--disable-runtime-dependency-installation"]
    if not deploy.tls.enabled:
        if deploy.auth.enabled:
            raise ValueError("SuperNode authentication needs TLS: set deploy.tls.enabled=true (or deploy.auth.enabled=false)")
        return command + ["--insecure"]
    command += ["--ssl-ca-certfile", _existing(deploy.tls.ca_cert), "--ssl-certfile", _existing(deploy.tls.server_cert),
                "--ssl-keyfile", _existing(deploy.tls.server_key)]
    return command + (["--enable-supernode-auth"] if deploy.auth.enabled else [])


def supernode_command(deploy: DictConfig, node_config: str) -> list[str]:
    """`deploy` is a site's (conf/deploy/site.yaml)."""
    command = [str(BIN / "flower-supernode"), "--superlink", str(deploy.superlink), "--port", str(deploy.port),
               "--node-config", node_config]
    command += ["--root-certificates", _existing(deploy.tls.root_certificates)] if deploy.tls.enabled else ["--insecure"]
    if deploy.auth.enabled:
        command += ["--auth-supernode-private-key", _existing(deploy.auth.private_key)]
    if deploy.retry.max_retries is not None:
        command += ["--max-retries", str(deploy.retry.max_retries)]
    if deploy.retry.max_wait_time_s is not None:
        command += ["--max-wait-time", str(deploy.retry.max_wait_time_s)]
    if deploy.get("clientapp", {}).get("warm"):  # ClientApp processes forked from a warm one (federation/flower/warm_exec.py)
        return [sys.executable, "-m", "federation.flower.warm_exec", "supervise", "--runtime-api-address", f"127.0.0.1:{deploy.port}",
                "--", *command, "--isolation", "process"]
    return command


def wait_healthy(host: str, port: int, ca_cert: str | None, timeout_s: float = 60, process: Process | None = None) -> None:
    """Until the SuperLink answers /health (over HTTPS when `ca_cert` is given)."""
    scheme = "https" if ca_cert else "http"
    context = ssl.create_default_context(cafile=ca_cert) if ca_cert else None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and not process.alive():
            raise RuntimeError(f"{process.name} exited with code {process.popen.returncode}:\n{process.log_tail()}")
        try:
            with urllib.request.urlopen(f"{scheme}://{host}:{port}/health", timeout=2, context=context):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"the SuperLink at {host}:{port} did not answer /health within {timeout_s:g} s")


def write_connection(flwr_home: str | Path, address: str, ca_cert: str | None) -> None:
    """The `flwr` CLI's connection to this coordinator, as the default in $FLWR_HOME/config.toml."""
    connection = {"address": address} | ({"root-certificates": str(Path(ca_cert).resolve())} if ca_cert else {"insecure": True})
    path = Path(flwr_home) / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps({"superlink": {"default": CONNECTION, CONNECTION: connection}}))


def flwr(flwr_home: str | Path, *args: str, timeout_s: float = 120) -> dict:
    """One `flwr` CLI call with JSON output; raises with Flower's own message when it fails."""
    command = [str(BIN / "flwr"), *args, "--format", "json"]
    done = subprocess.run(command, env=flower_env(flwr_home), capture_output=True, text=True, timeout=timeout_s)
    try:
        answer = json.loads(done.stdout[done.stdout.find("{"):])
    except ValueError:
        answer = {"success": False, "error-message": (done.stdout + done.stderr).strip()}
    if not answer.get("success", False):
        raise RuntimeError(f"`flwr {' '.join(args)}` failed: {answer.get('error-message', answer)}")
    return answer


def register_site_keys(flwr_home: str | Path, keys_dir: str | Path, sites: list[str]) -> list[str]:
    """Register each site's public key `<keys_dir>/<site>.pub` with the SuperLink; the sites newly registered."""
    keys = {site: Path(keys_dir) / f"{site}.pub" for site in sites}
    missing = [str(path) for path in keys.values() if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"no public key for these sites (make them with scripts/make_certificates.sh): {missing}")
    registered = {n.get("owner-name") or n.get("name") for n in _supernodes(flwr_home)}
    added = []
    for site, key in keys.items():
        if site in registered:
            continue
        try:
            flwr(flwr_home, "supernode", "register", str(key), CONNECTION, "--name", site)
            added.append(site)
        except RuntimeError as err:
            if "already" not in str(err).lower():
                raise
    return added


def submit_run(flwr_home: str | Path, run_config: dict[str, str], config_path: str | Path) -> int:
    """`flwr run` of the rarefed app with this run config (written as TOML); the run id."""
    Path(config_path).write_text(tomli_w.dumps(run_config))
    answer = flwr(flwr_home, "run", str(APP_DIR), CONNECTION, "--run-config", str(Path(config_path).resolve()))
    return int(answer["run-id"])


def run_status(flwr_home: str | Path, run_id: int) -> str:
    """Flower's status of a run, e.g. "running" or "finished:completed"."""
    runs = flwr(flwr_home, "ls", CONNECTION, "--run-id", str(run_id)).get("runs", [])
    return runs[0]["status"] if runs else "unknown"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _supernodes(flwr_home: str | Path) -> list[dict]:
    try:
        return flwr(flwr_home, "supernode", "list", CONNECTION).get("nodes", [])
    except RuntimeError:
        return []


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill_all(pids: list[int]) -> None:
    for pid in pids:
        for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
            try:
                kill()
            except (ProcessLookupError, PermissionError):
                pass


def _existing(path: str) -> str:
    resolved = Path(path).resolve()
    if not resolved.is_file():
        raise FileNotFoundError(f"{resolved} not found (make the certificates and keys with scripts/make_certificates.sh)")
    return str(resolved)
