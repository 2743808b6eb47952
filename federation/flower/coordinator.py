"""The deployed coordinator (run by the ServerApp): the in-process engine's rounds over Flower.

Each round is the round skeleton of federation/round_loop.py, as in-process:
sample sites (participation), ask them to train, screen the replies, aggregate
the rest with the configured strategy in consortium order, validate the candidate
at every connected site, let the observers decide (governance, when the ServerApp
builds them) and record the round. Only the transport differs
(federation/flower/transport.py): sites are other processes that may be slow,
dead or misconfigured, so every exchange has a reply timeout and a round needs
`participation.min_sites` usable updates. What the coordinator adds is that it
may die itself: its state is checkpointed after every round and a restart
resumes after the last completed one.

Privacy as in-process (federation/privacy/hooks.py): under `privacy=site_dp` the
strategy is wrapped in site-level DP and a site whose budget one more round would
overrun is not asked to train; under `privacy=dp_sgd` each site keeps its own
budget and declines a round that would overrun it. Either way the round record
carries every site's epsilon so far. Under `federation=secure_fedavg` the train
replies carry key adverts instead of updates, and the round's aggregate comes
from the secure-aggregation steps over Flower messages (secagg.py): the
coordinator never sees one site's update, so the update validator's norm screen
has nothing to screen (the sites clip to the protocol's bound instead).
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence

from omegaconf import DictConfig, OmegaConf

from federation.engine import history_rows
from federation.flower.builder import build_module, build_strategy
from federation.flower.checkpoint import CoordinatorState
from federation.flower.link import SiteLink
from federation.flower.plan import consortium_plan
from federation.flower.run_folder import RunFolder
from federation.flower.transport import FlowerTransport
from federation.privacy.hooks import pretrain_public, privacy_kind, wrap_strategy
from federation.round_loop import RoundLoop
from federation.round_record import RoundObserver, RoundRecord
from federation.state import StateDict, get_state, set_state, trainable_keys
from federation.strategies.base import Strategy
from federation.training_env import local_limits

log = logging.getLogger(__name__)


class Coordinator:
    def __init__(self, cfg: DictConfig, link: SiteLink, folder: RunFolder, observers: Sequence[RoundObserver] = (),
                 eligible: Callable[[int], set[str]] | None = None, findings: Callable[..., dict] | None = None):
        """`observers`, `eligible`, `findings`: the governance hooks, as InProcessEngine takes them (server_app.py builds them)."""
        self.cfg, self.link, self.folder = cfg, link, folder
        self.plan = consortium_plan(cfg.data)
        strategy, participation, validator = build_strategy(cfg)
        self.rounds, self.seed, self.limits = int(cfg.federation.rounds), int(cfg.seed), local_limits(cfg.federation)
        strategy = wrap_strategy(strategy, cfg.get("privacy"), self.rounds)  # site-level DP wraps the strategy
        self.settings = cfg.deploy.rounds
        if float(self.settings.message_ttl_s) < float(self.settings.reply_timeout_s):
            raise ValueError("deploy.rounds.message_ttl_s must be at least reply_timeout_s: a message would expire before its reply is due")
        weighting = strategy.secure_weighting() if strategy.secure_aggregation else None
        self.transport = FlowerTransport(link, self.plan, folder, self.settings, participation.min_sites, self.limits, self.seed, self.rounds,
                                         cfg.get("privacy"), weighting)
        self.loop = RoundLoop(self.transport, strategy, participation, validator, self.seed, observers, eligible, findings)
        self.module = build_module(cfg, self.plan)

    @property
    def strategy(self) -> Strategy:
        """The loop's strategy (replaced by its snapshot when a round is refused)."""
        return self.loop.strategy

    def run(self) -> CoordinatorState:
        state = self._start()
        self.transport.rounds = self.rounds  # (a test may end the run early by lowering `rounds`)
        self.strategy.set_parameter_keys(n for n, p in self.module.named_parameters() if p.requires_grad)  # as in-process
        self.transport.wait_for_sites(len(self.plan.sites), float(self.settings.wait_for_all_s), required=0)
        for round_ in range(state.round + 1, self.rounds + 1):
            record = self.run_round(round_, state.global_state)
            self._advance(state, record)
            self.folder.checkpoint.save(state)
            log.info("round %d/%d %s; checkpoint written", round_, self.rounds, record.decision)
        set_state(self.module, state.global_state)
        self.folder.write_results(self.cfg, state, self.module.model.state_dict())
        return state

    def run_round(self, round_: int, state: StateDict) -> RoundRecord:
        """One round from `state` (federation/round_loop.py) over Flower messages."""
        return self.loop.run_round(round_, state)

    def _start(self) -> CoordinatorState:
        fingerprint = run_fingerprint(self.cfg, self.plan.fingerprint)
        saved = self.folder.checkpoint.load(fingerprint)
        if saved is None:
            log.info("starting a new run of %d rounds with sites %s", self.rounds, list(self.plan.sites))
            pretrain_public(self.cfg.get("privacy"), self.module, self.plan.labels, self.seed)  # public data only, as in-process
            return CoordinatorState(0, get_state(self.module, trainable_keys(self.module)), fingerprint=fingerprint)
        if saved.strategy_state is not None:
            self.strategy.load_state_dict(saved.strategy_state)
        if saved.rounds:
            self.transport.site_privacy = dict(saved.rounds[-1].get("privacy", {}))
        log.info("resuming after round %d of %d from %s", saved.round, self.rounds, self.folder.checkpoint.path)
        return saved

    def _advance(self, state: CoordinatorState, record: RoundRecord) -> None:
        state.round, state.global_state = record.round, record.global_state
        state.strategy_state = self.strategy.state_dict()
        state.history.extend(history_rows(record, {o.site: o.n_samples for o in record.outcomes}))
        state.rounds.append(round_summary(record))


def round_summary(record: RoundRecord) -> dict:
    """rounds.json's entry: aggregates only (no tensors)."""
    flower = record.extra.get("flower", {})
    sites = {
        o.site: {"status": str(o.status), "reason": o.reason, "n_samples": o.n_samples, "update_norm": o.update_norm,
                 "bytes": flower.get("bytes", {}).get(o.site, {}), "val": o.val_metrics}
        for o in record.outcomes
    }
    return {"round": record.round, "decision": str(record.decision), "reason": record.reason, "sites": sites, "test": flower.get("test", {}),
            "seconds": flower.get("seconds", {}), "privacy": record.privacy}


def run_fingerprint(cfg: DictConfig, plan_fingerprint: str) -> str:
    """What a checkpoint must match to be resumed: the plan, the seed, the model and the federation config."""
    parts = {"plan": plan_fingerprint, "seed": cfg.seed} | {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("model", "federation")}
    if privacy_kind(cfg.get("privacy")) != "none":  # (runs without DP keep the fingerprint they had)
        parts["privacy"] = OmegaConf.to_container(cfg.privacy, resolve=True)
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
