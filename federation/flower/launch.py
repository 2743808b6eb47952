"""Bringing up a deployment from its Hydra config: the coordinator, one site, and watching a run.

The coordinator is a SuperLink (TLS, node authentication, a database so that
registered keys and runs survive a restart) plus one `flwr run` of the rarefed
app; the ServerApp then writes the run folder. A site is a SuperNode with its
node config. The same functions serve the scripts, the loopback launcher, the
tests and the benchmark.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig

from federation.flower import deployment as flower
from federation.flower.config import join_overrides, node_config_string
from federation.flower.plan import consortium_plan
from federation.flower.run_folder import FAILED, FINISHED, RunFolder

log = logging.getLogger(__name__)
DEPLOY_PREFIXES = ("deploy.", "+deploy.", "++deploy.", "~deploy.")


def split_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """Command-line overrides -> (the consortium's, shared with every site; this process's own `deploy.*`)."""
    own = [o for o in overrides if o.startswith(DEPLOY_PREFIXES)]
    return [o for o in overrides if o not in own], own


@dataclass
class CoordinatorService:
    cfg: DictConfig
    superlink: flower.Process
    started: list[float] = field(default_factory=list)

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.deploy.run_dir).resolve()

    @property
    def flwr_home(self) -> Path:
        return Path(self.cfg.deploy.superlink.flwr_home).resolve()

    def submit(self, consortium: list[str], coordinator: list[str]) -> int:
        """Start the run: the ServerApp composes deploy/coordinator with these overrides (the run dir made absolute)."""
        deploy = self.cfg.deploy
        resolved = [f"deploy.run_dir={self.run_dir}", f"deploy.auth.enabled={deploy.auth.enabled}",
                    f"deploy.auth.site_keys={Path(deploy.auth.site_keys).resolve()}"]  # the ServerApp's cwd is not ours
        own = [o for o in coordinator if not o.startswith("deploy.loopback.")] + resolved
        run_config = {"consortium": join_overrides(consortium), "coordinator": join_overrides(own)}
        self.started.append(time.time())
        run_id = flower.submit_run(self.flwr_home, run_config, self.run_dir / "run_config.toml")
        log.info("submitted run %d; results in %s", run_id, self.run_dir)
        return run_id

    def wait(self, run_id: int, timeout_s: float | None = None, poll_s: float = 2.0, check_every_s: float = 20.0) -> dict:
        """The run's final status (status.json), once it finished or failed; raises if the SuperLink died."""
        folder, deadline, checked = RunFolder(self.run_dir), time.monotonic() + (timeout_s or float("inf")), time.monotonic()
        while time.monotonic() < deadline:
            status = folder.read_status()
            if status.get("time", 0) >= self.started[-1] and status.get("state") in (FINISHED, FAILED):
                return status
            if not self.superlink.alive():
                raise RuntimeError(f"the SuperLink exited (code {self.superlink.popen.returncode}):\n{self.superlink.log_tail()}")
            if time.monotonic() - checked > check_every_s:
                checked, flower_status = time.monotonic(), flower.run_status(self.flwr_home, run_id)
                if flower_status.startswith("finished") and folder.read_status().get("state") not in (FINISHED, FAILED):
                    return {"state": FAILED, "error": f"Flower reports the run {flower_status} but the ServerApp wrote no result; "
                                                      f"see {self.superlink.log_path}"}
            time.sleep(poll_s)
        raise TimeoutError(f"run {run_id} did not finish within {timeout_s:g} s; last status: {folder.read_status()}")

    def stop(self) -> None:
        self.superlink.stop()


def start_coordinator(cfg: DictConfig, health_timeout_s: float = 120) -> CoordinatorService:
    """The SuperLink, healthy, with every consortium site's key registered and the `flwr` connection written."""
    deploy = cfg.deploy
    run_dir = Path(deploy.run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    if deploy.auth.enabled:
        register_keys_privately(cfg, health_timeout_s)
    superlink = start_superlink(deploy, str(deploy.superlink.host), int(deploy.superlink.port), run_dir / "superlink.log", health_timeout_s)
    log.info("SuperLink up on %s:%s (pid %d, log %s)", deploy.superlink.host, deploy.superlink.port, superlink.pid, superlink.log_path)
    return CoordinatorService(cfg, superlink)


def register_keys_privately(cfg: DictConfig, health_timeout_s: float) -> None:
    """Register the sites' keys through a SuperLink on a loopback-only port, before any site can reach the real one.

    A SuperNode whose key is not registered yet is refused and exits at once, so
    sites started before the coordinator would otherwise race the registration.
    The keys live in the SuperLink's database and are there when it opens its port.
    """
    deploy = cfg.deploy
    log_path = Path(deploy.run_dir).resolve() / "superlink.log"
    private = start_superlink(deploy, "127.0.0.1", flower.free_port(), log_path, health_timeout_s)
    try:
        sites = list(consortium_plan(cfg.data).sites)
        added = flower.register_site_keys(Path(deploy.superlink.flwr_home).resolve(), deploy.auth.site_keys, sites)
        log.info("registered site keys: %s", added or "all already registered")
    finally:
        private.stop()


def start_superlink(deploy: DictConfig, host: str, port: int, log_path: Path, health_timeout_s: float) -> flower.Process:
    """A SuperLink on host:port, once it answers /health, with the `flwr` CLI's connection pointing at it."""
    superlink = flower.start("superlink", flower.superlink_command(deploy, host, port), deploy.superlink.flwr_home, log_path,
                             deploy.superlink.get("superexec_poll_s"))
    try:
        ca = str(Path(deploy.tls.ca_cert).resolve()) if deploy.tls.enabled else None
        reach = "127.0.0.1" if host in ("0.0.0.0", "::", "localhost") else host  # where this machine reaches it
        flower.wait_healthy(reach, port, ca, health_timeout_s, superlink)
        flower.write_connection(Path(deploy.superlink.flwr_home).resolve(), f"{reach}:{port}", ca)
    except BaseException:
        superlink.stop()
        raise
    return superlink


def start_site(cfg: DictConfig, local_overrides: list[str], log_path: str | Path | None = None) -> flower.Process:
    """This site's SuperNode; the ClientApp composes deploy/site with `local_overrides` for every message.

    The node's own paths (site cache, timing log) travel resolved: the ClientApp must find them
    whatever directory Flower starts it in.
    """
    deploy = cfg.deploy
    data = str(Path(deploy.data_path).resolve()) if deploy.data_path else None
    cache = deploy.get("site_cache")
    own = [f"deploy.site_cache.dir={Path(str(cache.dir)).resolve()}"] if cache is not None and cache.get("dir") else []
    timing = str(Path(deploy.timing_log).resolve()) if deploy.get("timing_log") else None
    node_config = node_config_string(str(deploy.site), data, list(local_overrides) + own, timing)
    home = Path(deploy.flwr_home).resolve()
    poll = deploy.get("poll", {}).get("superexec_s")
    return flower.start(f"site {deploy.site}", flower.supernode_command(deploy, node_config), home, log_path or home.parent / "supernode.log", poll)


SUPERNODE_PROBLEMS = {
    "Connection attempt failed": "the coordinator's SuperLink at {superlink} is not reachable yet; retrying with backoff "
                                 "(giving up after {max_wait}s without it)",
    "Failed to activate SuperNode": "the coordinator refused this site's key: ask it to register {key}.pub "
                                    "(`flwr supernode register`), or check deploy.auth.private_key",
    "CERTIFICATE_VERIFY_FAILED": "TLS: the coordinator's certificate is not signed by {ca} or not issued for {superlink}",
}


def explain(line: str, deploy: DictConfig) -> str | None:
    """A plain statement of what a SuperNode log line means for this site, for the lines that need one."""
    for marker, text in SUPERNODE_PROBLEMS.items():
        if marker in line:
            max_wait = deploy.retry.max_wait_time_s if deploy.retry.max_wait_time_s is not None else "unlimited "
            return f"site {deploy.site}: " + text.format(superlink=deploy.superlink, max_wait=max_wait,
                                                         key=deploy.auth.private_key, ca=deploy.tls.root_certificates)
    return None


def follow_site(process: flower.Process, deploy: DictConfig, poll_s: float = 1.0) -> int:
    """Echo the SuperNode's log, each problem line followed by what it means for this site; the exit code."""
    told, offset = set(), 0
    while True:
        text = process.log_path.read_text(errors="replace") if process.log_path.exists() else ""
        for line in text[offset:].splitlines():
            print(line, flush=True)
            meaning = explain(line, deploy)
            if meaning and meaning not in told:  # once per kind of problem, not at every retry
                print(meaning, flush=True)
                told.add(meaning)
        offset = len(text)
        if not process.alive():
            return process.popen.returncode
        time.sleep(poll_s)
