"""The coordinator's Flower ServerApp: compose the coordinator config, run the rounds, write the results.

Flower's stock strategies cannot aggregate replies whose arrays differ between
sites (ours differ by modality), so the ServerApp runs rarefed's round loop
(coordinator.py) over the grid's push and pull and aggregates with rarefed's
strategies. With `deploy.governance=true` (conf/deploy/coordinator.yaml; off by
default, since the default agreement names the synthetic consortium's members)
it builds the governance observers of an in-process run into the run folder
(ledger, registry, promotion rule; federation/governance/run_hooks.py says which
monitors a coordinator cannot run) and writes the dashboard after the last
round. Rounds are logged to the experiment tracker as in-process runs log them
(federation/tracking.py). Started by the SuperLink for each `flwr run`.
"""
from __future__ import annotations

import logging
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from federation.flower.config import coordinator_config
from federation.flower.coordinator import Coordinator
from federation.flower.link import SiteLink, load_site_keys
from federation.flower.plan import consortium_plan, site_modalities
from federation.flower.run_folder import FAILED, FINISHED, RunFolder
from federation.governance import finish
from federation.governance.run_hooks import deployment_hooks
from federation.settings import check_training_config
from federation.tracking import track
from federation.training_env import quiet_lightning

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    quiet_lightning()
    cfg = coordinator_config(context.run_config)
    folder = RunFolder(cfg.deploy.run_dir)
    log_to(folder.path / "coordinator.log")
    rounds = int(cfg.federation.rounds)
    try:
        check_training_config(cfg, paths=False)  # as scripts/flower_coordinator.py did; recorded in status.json if it fails
        plan = consortium_plan(cfg.data)
        keys = load_site_keys(cfg.deploy.auth.site_keys, list(plan.sites)) if cfg.deploy.auth.enabled else None
        link = SiteLink(grid, plan, float(cfg.deploy.rounds.identify_timeout_s), float(cfg.deploy.rounds.message_ttl_s), keys,
                        float(cfg.deploy.rounds.get("reply_poll_s", 3.0)), folder.path / "messages.jsonl")
        governed = bool(cfg.deploy.get("governance"))
        hooks = deployment_hooks(cfg, folder.path, plan, site_modalities(cfg.data, plan)) if governed else {}
        with track(cfg, folder.path) as tracker:  # MLflow (conf/tracking/), the round observer an in-process run has
            hooks["observers"] = [*hooks.get("observers", []), *tracker.observers(int(cfg.seed), folder.path)]
            state = Coordinator(cfg, link, folder, **hooks).run()
            if governed:
                finish(folder.path, cfg.governance)  # the dashboard, from the ledger
    except Exception as err:
        folder.status("stopped", folder.read_status().get("round", 0), rounds, state=FAILED, error=f"{type(err).__name__}: {err}")
        raise
    folder.status("done", state.round, rounds, state=FINISHED)


def log_to(path: Path) -> None:
    """The round log on the coordinator's disk too (Flower keeps the ServerApp's output with the SuperLink)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("federation")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
