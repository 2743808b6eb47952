"""The deployed coordinator's round loop (run by the ServerApp), the in-process engine's rounds over Flower.

Each round, as in federation/engine.py: sample sites (participation), ask them to
train, screen the replies (a malformed reply, one for another round, arrays of
the wrong shape or a wild norm is rejected with its reason), aggregate the rest
with the configured strategy in consortium order, validate the candidate at
every connected site, and record the round. What Flower adds: sites are other
processes that may be slow, dead or misconfigured, so every exchange has a reply
timeout and a round needs `participation.min_sites` usable updates; and the
coordinator itself may die, so its state is checkpointed after every round and a
restart resumes after the last completed one.

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

import copy
import hashlib
import json
import logging
import time

from flwr.app import ConfigRecord, MessageType
from omegaconf import DictConfig, OmegaConf

from federation.engine import history_rows
from federation.flower.builder import build_module, build_strategy
from federation.flower.checkpoint import CoordinatorState
from federation.flower.link import Reply, SiteLink, reply_problem
from federation.flower.plan import consortium_plan
from federation.flower.records import (
    DECLINED,
    Instructions,
    MalformedMessage,
    declined_from_content,
    instructions_content,
    metrics_from_content,
    record_bytes,
    update_from_content,
)
from federation.flower.run_folder import RunFolder
from federation.flower.secagg import (
    SECAGG,
    FlowerSites,
    advert_from_content,
    report_from_content,
)
from federation.privacy.hooks import privacy_kind, wrap_strategy
from federation.privacy.messages import KeyAdvert
from federation.privacy.secagg import SecAggError
from federation.privacy.site_dp import SiteLevelDP, privacy_refusal
from federation.round_record import (
    ACCEPTED,
    FAILED,
    REJECTED,
    ROUND_ACCEPTED,
    ROUND_FAILED,
    SKIPPED,
    RoundRecord,
    SiteOutcome,
)
from federation.state import StateDict, get_state, set_state, trainable_keys
from federation.strategies.base import Strategy
from federation.training_env import local_limits
from federation.update import ModelUpdate

log = logging.getLogger(__name__)


class Coordinator:
    def __init__(self, cfg: DictConfig, link: SiteLink, folder: RunFolder, observers=()):
        self.cfg, self.link, self.folder = cfg, link, folder
        self.plan = consortium_plan(cfg.data)
        strategy, self.participation, self.validator = build_strategy(cfg)
        self.participation.check(len(self.plan.sites))
        self.rounds, self.seed, self.limits = int(cfg.federation.rounds), int(cfg.seed), local_limits(cfg.federation)
        self.privacy_cfg = cfg.get("privacy")
        self.strategy = wrap_strategy(strategy, self.privacy_cfg, self.rounds)  # site-level DP wraps the strategy
        self.secure = secure_aggregation(self.strategy)
        self.site_privacy: dict[str, dict[str, float]] = {}
        """DP-SGD: each site's privacy spent so far, as its last reply reported it."""
        self.settings = cfg.deploy.rounds
        if float(self.settings.message_ttl_s) < float(self.settings.reply_timeout_s):
            raise ValueError("deploy.rounds.message_ttl_s must be at least reply_timeout_s: a message would expire before its reply is due")
        self.observers = list(observers)
        self.module = build_module(cfg, self.plan)

    def run(self) -> CoordinatorState:
        state = self._start()
        self._wait_for_sites(len(self.plan.sites), float(self.settings.wait_for_all_s), required=0)
        for round_ in range(state.round + 1, self.rounds + 1):
            record = self.run_round(round_, state.global_state)
            self._advance(state, record)
            self.folder.checkpoint.save(state)
            log.info("round %d/%d %s; checkpoint written", round_, self.rounds, record.decision)
        set_state(self.module, state.global_state)
        self.folder.write_results(self.cfg, state, self.module.model.state_dict())
        return state

    def run_round(self, round_: int, state: StateDict) -> RoundRecord:
        """One round from `state`: collect, screen, aggregate, validate, record."""
        outcomes = {site: SiteOutcome(site, SKIPPED, "not sampled this round") for site in self.plan.sites}
        online = self._wait_for_sites(self.participation.min_sites, float(self.settings.wait_for_min_s), self.participation.min_sites)
        self.folder.status("training", round_, self.rounds)
        started = time.monotonic()
        accepted, traffic = self._collect(round_, state, outcomes, online)
        seconds = {"train": time.monotonic() - started}
        snapshot = copy.deepcopy(self.strategy)  # restored if the round is refused: FedOpt moments, SCAFFOLD controls
        if self.secure and len(accepted) >= self.participation.min_sites:
            started = time.monotonic()
            record = self._aggregate_securely(round_, state, accepted, outcomes, online, traffic)
            seconds["secure_aggregation"] = time.monotonic() - started
        elif len(accepted) >= self.participation.min_sites:
            ordered = sorted(accepted, key=lambda u: self.plan.site_index(u.site))  # the in-process engine's order
            record = RoundRecord(round_, [], state, self.strategy.aggregate(state, ordered))
        else:
            reason = f"{len(accepted)} usable update(s), fewer than participation.min_sites={self.participation.min_sites}"
            log.warning("round %d failed: %s", round_, reason)
            record = RoundRecord(round_, [], state, state, ROUND_FAILED, reason)
        started = time.monotonic()
        test = self._validate(round_, record.global_state, outcomes) if self._validates(round_) else {}
        seconds["validate"] = time.monotonic() - started
        record.outcomes = [outcomes[site] for site in self.plan.sites]
        report = getattr(self.strategy, "privacy_report", None)
        record.privacy = dict(self.site_privacy) | (report() if report else {})
        record.extra["flower"] = {"bytes": traffic, "test": test, "seconds": seconds}
        for observer in self.observers:
            observer.on_round(record)
        if record.decision != ROUND_ACCEPTED and record.global_state is not state:
            self.strategy, record.global_state = snapshot, state
        return record

    def _start(self) -> CoordinatorState:
        fingerprint = run_fingerprint(self.cfg, self.plan.fingerprint)
        saved = self.folder.checkpoint.load(fingerprint)
        if saved is None:
            log.info("starting a new run of %d rounds with sites %s", self.rounds, list(self.plan.sites))
            return CoordinatorState(0, get_state(self.module, trainable_keys(self.module)), fingerprint=fingerprint)
        if saved.strategy_state is not None and hasattr(self.strategy, "load_state_dict"):
            self.strategy.load_state_dict(saved.strategy_state)
        if saved.rounds:
            self.site_privacy = dict(saved.rounds[-1].get("privacy", {}))
        log.info("resuming after round %d of %d from %s", saved.round, self.rounds, self.folder.checkpoint.path)
        return saved

    def _advance(self, state: CoordinatorState, record: RoundRecord) -> None:
        state.round, state.global_state = record.round, record.global_state
        state.strategy_state = self.strategy.state_dict() if hasattr(self.strategy, "state_dict") else None
        state.history.extend(history_rows(record, {o.site: o.n_samples for o in record.outcomes}))
        state.rounds.append(round_summary(record))

    def _collect(self, round_: int, state: StateDict, outcomes: dict[str, SiteOutcome], online: dict[str, int]):
        """Ask sampled sites to train (retrying with untried sites while short of the minimum); the accepted updates and bytes moved."""
        accepted, tried, traffic = [], set(), {}
        objective = self.strategy.local_objective()
        for attempt in range(self.participation.retries + 1):
            untried = [i for i in range(len(self.plan.sites)) if i not in tried]
            if not untried or len(accepted) >= self.participation.min_sites:
                break
            chosen = [self.plan.sites[untried[j]] for j in self.participation.sample(len(untried), round_, attempt, self.seed)]
            tried.update(self.plan.site_index(site) for site in chosen)
            for site in (s for s in chosen if s not in online):
                problem = self.link.problems.get(site)
                outcomes[site].status, outcomes[site].reason = FAILED, f"not connected{f' ({problem})' if problem else ''}"
            asked = [site for site in chosen if site in online and not self._refused(round_, site, outcomes)]
            contents = {site: self._train_content(round_, site, state, objective) for site in asked}
            replies = self.link.exchange(MessageType.TRAIN, contents, online, round_, float(self.settings.reply_timeout_s))
            updates, adverts = [], []
            for site, reply in replies.items():
                traffic[site] = {"down": record_bytes(contents[site]), "up": record_bytes(reply.content) if _has_content(reply) else 0}
                read = self._read_update(round_, site, reply, outcomes[site], state)
                if isinstance(read, KeyAdvert):
                    adverts.append(read)
                elif read is not None:
                    updates.append(read)
            screened, rejected = self.validator.screen(updates, state)
            for site, reason in rejected.items():
                log.warning("round %d: update from site %r rejected: %s", round_, site, reason)
                outcomes[site].status, outcomes[site].reason = REJECTED, reason
            for answer in screened + adverts:  # an advert's site may still drop out of the secure-aggregation steps
                outcomes[answer.site].status, outcomes[answer.site].reason = ACCEPTED, ""
            accepted += screened + adverts
        return accepted, traffic

    def _train_content(self, round_: int, site: str, state: StateDict, objective: dict):
        content = instructions_content(state, self._instructions(round_, site, objective))
        if self.secure:  # keep the update at the site and advertise keys instead; site-level DP weighs every holder once
            weighting = "uniform" if isinstance(self.strategy, SiteLevelDP) else self.secure.weighting
            content[SECAGG] = ConfigRecord({"weighting": weighting})
        return content

    def _refused(self, round_: int, site: str, outcomes: dict[str, SiteOutcome]) -> bool:
        """Site-level DP: a site whose next contribution would overrun its budget is not asked (as in-process)."""
        refusal = privacy_refusal(self.strategy, site)
        if refusal is None:
            return False
        outcomes[site].reason = refusal
        log.warning("round %d: site %r does not take part: %s", round_, site, outcomes[site].reason)
        return True

    def _aggregate_securely(self, round_: int, state: StateDict, adverts: list[KeyAdvert], outcomes: dict[str, SiteOutcome],
                            online: dict[str, int], traffic: dict) -> RoundRecord:
        """The round's aggregate through the secure-aggregation steps; a round with more dropouts than tolerated fails."""

        def dropped(site: str, step: str, reason: str) -> None:
            if step == "unmask":  # its masked input is already in the sum; only its shares of the others are missing
                outcomes[site].reason = f"did not answer the unmasking step ({reason}); its input is in the sum"
            else:
                outcomes[site].status, outcomes[site].reason = FAILED, f"dropped out of secure aggregation at the {step!r} step: {reason}"

        self.folder.status("secure aggregation", round_, self.rounds)
        ordered = sorted(adverts, key=lambda a: self.plan.site_index(a.site))
        sites = FlowerSites(self.link, online, round_, float(self.settings.reply_timeout_s), ordered, dropped, traffic)
        try:
            deltas = self.strategy.combine_secure(sites, round_)
        except SecAggError as err:
            log.warning("round %d failed: %s", round_, err)
            return RoundRecord(round_, [], state, state, ROUND_FAILED, str(err))
        return RoundRecord(round_, [], state, self.strategy.apply(state, deltas))

    def _instructions(self, round_: int, site: str, objective: dict) -> Instructions:
        seed = self.plan.seed(self.seed, round_, site)
        return Instructions(round_, site, self.plan.fingerprint, seed, self.limits, objective)

    def _read_update(self, round_: int, site: str, reply: Reply, outcome: SiteOutcome, state: StateDict) -> ModelUpdate | KeyAdvert | None:
        """The reply's update (or, under secure aggregation, key advert), or None with the site's outcome saying why
        (failed: no usable answer; rejected: a bad one; skipped: it declined, its privacy budget spent)."""
        problem, status = reply_problem(reply)
        answer = None
        if not problem:
            try:
                if DECLINED in reply.content:
                    return self._declined(round_, site, reply, outcome)
                if self.secure:
                    answer, report = self._advert(reply, round_, state), report_from_content(reply.content)
                else:
                    answer = update_from_content(reply.content, round_)
                if answer.site != site:
                    problem, status = f"the reply is signed as site {answer.site!r}", REJECTED
            except MalformedMessage as err:
                problem, status = str(err), REJECTED
        if problem:
            log.warning("round %d: site %r %s: %s", round_, site, status, problem)
            outcome.status, outcome.reason = status, problem
            return None
        if isinstance(answer, KeyAdvert):
            outcome.n_samples, outcome.train_metrics = report
        else:
            outcome.n_samples, outcome.sample_counts = answer.n_samples, dict(answer.sample_counts)
            outcome.update_norm, outcome.train_metrics = answer.norm(), dict(answer.metrics)
        self._note_privacy(site, outcome.train_metrics)
        return answer

    def _advert(self, reply, round_: int, state: StateDict) -> KeyAdvert:
        advert = advert_from_content(reply.content)
        if advert.round != round_:
            raise MalformedMessage(f"site {advert.site!r} advertised keys for round {advert.round}, expected round {round_}")
        wrong = sorted(k for k, shape in advert.keys.items() if k not in state or tuple(state[k].shape) != tuple(shape))
        if wrong:
            raise MalformedMessage(f"site {advert.site!r} announces parameters the global model does not have with those shapes: {wrong[:5]}")
        return advert

    def _declined(self, round_: int, site: str, reply, outcome: SiteOutcome) -> None:
        """A site that stops contributing says why (its privacy budget); it is skipped, not failed."""
        reason, metrics = declined_from_content(reply.content, round_)
        log.warning("round %d: site %r does not take part: %s", round_, site, reason)
        outcome.reason = reason
        self._note_privacy(site, metrics)

    def _note_privacy(self, site: str, metrics: dict[str, float]) -> None:
        if "epsilon" in metrics and self.privacy_cfg is not None:
            budget = float(self.privacy_cfg.get("epsilon", float("inf")))
            self.site_privacy[site] = {"epsilon": float(metrics["epsilon"]), "delta": float(metrics.get("delta", 0.0)), "epsilon_budget": budget}

    def _validates(self, round_: int) -> bool:
        every = int(self.settings.validate_every)
        return round_ == self.rounds or (every > 0 and round_ % every == 0)

    def _validate(self, round_: int, state: StateDict, outcomes: dict[str, SiteOutcome]) -> dict[str, dict]:
        """The candidate at every connected site (as each runs it); after the last round also on the test splits."""
        self.folder.status("evaluating", round_, self.rounds)
        splits = ["val", "test"] if round_ == self.rounds else ["val"]
        online = self.link.online()
        contents = {site: instructions_content(state, Instructions(round_, site, self.plan.fingerprint, splits=splits)) for site in online}
        tests = {}
        for site, reply in self.link.exchange(MessageType.EVALUATE, contents, online, round_, float(self.settings.reply_timeout_s)).items():
            problem, _ = reply_problem(reply)
            try:
                metrics = {} if problem else metrics_from_content(reply.content, round_)
            except MalformedMessage as err:
                problem, metrics = str(err), {}
            if problem:
                log.warning("round %d: site %r did not validate the new model: %s", round_, site, problem)
            outcomes[site].val_metrics = {k[len("val_"):]: v for k, v in metrics.items() if k.startswith("val_")}
            if "test" in splits and metrics:
                tests[site] = {k[len("test_"):]: v for k, v in metrics.items() if k.startswith("test_")}
        return tests

    def _wait_for_sites(self, need: int, wait_s: float, required: int) -> dict[str, int]:
        """Connected sites, after waiting up to `wait_s` for `need` of them; fewer than `required` stops the run."""
        deadline, announced = time.monotonic() + wait_s, 0.0
        while True:
            online = self.link.online()
            if len(online) >= need or time.monotonic() >= deadline:
                break
            if time.monotonic() - announced > 30:
                missing = [s for s in self.plan.sites if s not in online]
                log.info("waiting for sites: %d of %d connected, need %d; missing %s", len(online), len(self.plan.sites), need, missing)
                announced = time.monotonic()
            time.sleep(float(self.settings.poll_s))
        if len(online) < required:
            raise RuntimeError(
                f"only {len(online)} site(s) connected ({sorted(online)}) after {wait_s:g} s, fewer than "
                f"participation.min_sites={required}; start the missing sites and run the coordinator again to resume"
            )
        return online


def secure_aggregation(strategy: Strategy):
    """The SecureFedAvg the round aggregates through (itself, or inside site-level DP), or None."""
    inner = strategy.inner if isinstance(strategy, SiteLevelDP) else strategy
    return inner if getattr(inner, "secure_aggregation", False) else None


def _has_content(reply: Reply) -> bool:
    return not isinstance(reply, str) and reply.has_content()


def round_summary(record: RoundRecord) -> dict:
    """rounds.json's entry: aggregates only (no tensors)."""
    flower = record.extra.get("flower", {})
    sites = {
        o.site: {"status": o.status, "reason": o.reason, "n_samples": o.n_samples, "update_norm": o.update_norm,
                 "bytes": flower.get("bytes", {}).get(o.site, {}), "val": o.val_metrics}
        for o in record.outcomes
    }
    return {"round": record.round, "decision": record.decision, "reason": record.reason, "sites": sites, "test": flower.get("test", {}),
            "seconds": flower.get("seconds", {}), "privacy": record.privacy}


def run_fingerprint(cfg: DictConfig, plan_fingerprint: str) -> str:
    """What a checkpoint must match to be resumed: the plan, the seed, the model and the federation config."""
    parts = {"plan": plan_fingerprint, "seed": cfg.seed} | {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("model", "federation")}
    if privacy_kind(cfg.get("privacy")) != "none":  # (runs without DP keep the fingerprint they had)
        parts["privacy"] = OmegaConf.to_container(cfg.privacy, resolve=True)
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
