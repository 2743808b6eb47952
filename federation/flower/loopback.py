"""The whole consortium on one machine over 127.0.0.1: a SuperLink and one SuperNode per site, real processes.

For trying a deployment before the hospitals' machines are ready, and for the
tests and the benchmark, which also crash and restart its parts (`kill_site`,
`kill_coordinator`, `restart_coordinator`). Certificates and site keys are made
with scripts/make_certificates.sh when missing, so TLS and node authentication
are on, as in a real deployment.
"""
from __future__ import annotations

import logging
import subprocess
from pathlib import Path

from omegaconf import DictConfig

from federation.flower import deployment as flower
from federation.flower.config import SITE_CONFIG, compose_config
from federation.flower.launch import CoordinatorService, start_coordinator, start_site
from federation.flower.plan import consortium_plan

log = logging.getLogger(__name__)
CERTIFICATE_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make_certificates.sh"


class Loopback:
    def __init__(self, cfg: DictConfig, consortium: list[str], coordinator: list[str] = ()):
        """`cfg`: conf/deploy/loopback.yaml composed with `consortium` + `coordinator` overrides."""
        self.cfg, self.consortium, self.coordinator_overrides = cfg, list(consortium), list(coordinator)
        self.run_dir = Path(cfg.deploy.run_dir).resolve()
        self.sites = list(cfg.deploy.loopback.sites or consortium_plan(cfg.data).sites)
        self.service: CoordinatorService | None = None
        self.nodes: dict[str, flower.Process] = {}

    def __enter__(self) -> Loopback:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        if self.cfg.deploy.tls.enabled and self.cfg.deploy.loopback.make_certificates:
            make_certificates(Path(self.cfg.deploy.certificates), "127.0.0.1", list(consortium_plan(self.cfg.data).sites))
        self.service = start_coordinator(self.cfg)
        for i, site in enumerate(self.sites):
            self.start_site(site, int(self.cfg.deploy.loopback.first_node_port) + i)

    def start_site(self, site: str, port: int) -> flower.Process:
        cfg = compose_config(SITE_CONFIG, self.consortium + self._site_overrides(site, port))
        own = [str(o) for o in self.cfg.deploy.loopback.get("site_overrides") or []]  # the ClientApp's config too
        self.nodes[site] = start_site(cfg, own, self.run_dir / "sites" / f"{site}.log")
        return self.nodes[site]

    def run(self, timeout_s: float | None = None) -> dict:
        """Submit the run and wait for its end; the final status (state finished or failed)."""
        run_id = self.service.submit(self.consortium, self.coordinator_overrides)
        return self.service.wait(run_id, timeout_s or float(self.cfg.deploy.loopback.timeout_s))

    def kill_site(self, site: str) -> None:
        self.nodes[site].kill()

    def kill_coordinator(self) -> None:
        """The crash: SIGKILL to the SuperLink and the ServerApp it runs."""
        self.service.superlink.kill()

    def restart_coordinator(self) -> None:
        self.service = start_coordinator(self.cfg)

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()
        if self.service is not None:
            self.service.stop()

    def _site_overrides(self, site: str, port: int) -> list[str]:
        deploy = self.cfg.deploy
        data = (deploy.loopback.data or {}).get(site)
        overrides = [
            f"deploy.site={site}", f"deploy.superlink=127.0.0.1:{deploy.superlink.port}", f"deploy.port={port}",
            f"deploy.flwr_home={self.run_dir / 'sites' / site / 'flwr_home'}", f"deploy.tls.enabled={deploy.tls.enabled}",
            f"deploy.tls.root_certificates={Path(deploy.tls.ca_cert).resolve()}", f"deploy.auth.enabled={deploy.auth.enabled}",
            f"deploy.auth.private_key={Path(deploy.auth.site_keys).resolve() / site}",
            f"deploy.site_cache.dir={self.run_dir / 'sites' / site / 'cache'}", f"deploy.timing_log={self.run_dir / 'sites' / site / 'timing.jsonl'}",
        ]
        overrides += [f"deploy.data_path={Path(data).resolve()}"] if data else []
        return overrides + [str(o) for o in deploy.loopback.get("site_overrides") or []]  # the SuperNode's settings


def make_certificates(out_dir: Path, host: str, sites: list[str]) -> None:
    """The consortium CA, the SuperLink's certificate and a key pair per site (missing ones only)."""
    done = subprocess.run(["bash", str(CERTIFICATE_SCRIPT), str(out_dir), host, *sites], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{CERTIFICATE_SCRIPT.name} failed: {done.stderr.strip() or done.stdout.strip()}")
