"""The deployed coordinator's transport: sites are SuperNodes, reached by Flower messages over the SiteLink.

The round loop (federation/round_loop.py) is the in-process engine's; what Flower
adds is here. Sites are other processes that may be slow, dead or misconfigured:
every exchange has a reply timeout, a site that is not connected or does not answer
fails its round, and a reply that is malformed, for another round or signed as
another site is rejected with its reason. Under secure aggregation the train
replies carry key adverts instead of updates and the aggregate comes from the
protocol's steps over messages (`FlowerSites`); a site that drops out of them is
noted in its outcome. Under `privacy=dp_sgd` each site reports its epsilon in its
replies (and declines a round that would overrun its budget). The transport also
records what moved (bytes per site, phase times, test metrics after the last
round) under `record.extra["flower"]`, and writes the phase to status.json.
"""
from __future__ import annotations

import logging
import time

from flwr.app import ConfigRecord, MessageType
from omegaconf import DictConfig

from federation.flower.link import Reply, SiteLink, reply_problem
from federation.flower.plan import ConsortiumPlan
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
from federation.flower.secagg import SECAGG, FlowerSites, advert_from_content, report_from_content
from federation.privacy.messages import KeyAdvert
from federation.round_record import FAILED, REJECTED, SKIPPED, Cause, RoundRecord, SiteOutcome
from federation.state import StateDict
from federation.update import ModelUpdate

log = logging.getLogger(__name__)
COUNTS = ("n_patients",)
"""Metrics that are counts: they travel as numbers in a MetricRecord and are recorded as ints, as in-process."""


class FlowerTransport:
    def __init__(self, link: SiteLink, plan: ConsortiumPlan, folder: RunFolder, settings: DictConfig, min_sites: int, limits: dict, seed: int,
                 rounds: int, privacy_cfg=None, secure_weighting: str | None = None):
        """`settings`: deploy.rounds (timeouts, polls, validate_every). `secure_weighting`: None, or how sites weigh
        their input under secure aggregation (then they keep their updates and send key adverts)."""
        self.link, self.plan, self.folder, self.settings = link, plan, folder, settings
        self.sites, self.min_sites, self.limits, self.seed, self.rounds = plan.sites, min_sites, limits, seed, rounds
        self.privacy_cfg, self.secure_weighting = privacy_cfg, secure_weighting
        self.updates_stay_at_sites = secure_weighting is not None
        self.site_privacy: dict[str, dict[str, float]] = {}
        """DP-SGD: each site's privacy spent so far, as its last reply reported it."""
        self.online: dict[str, int] = {}
        self.traffic: dict[str, dict[str, int]] = {}
        self.tests: dict[str, dict] = {}

    def open_round(self, round_: int) -> None:
        self.online = self.wait_for_sites(self.min_sites, float(self.settings.wait_for_min_s), self.min_sites)
        self.traffic, self.tests = {}, {}
        self.folder.status("training", round_, self.rounds)

    def train(self, round_: int, state: StateDict, sites: list[str], objective: dict, outcomes: dict[str, SiteOutcome]) -> list[ModelUpdate | KeyAdvert]:
        for site in (s for s in sites if s not in self.online):
            problem = self.link.problems.get(site)
            outcomes[site].mark(FAILED, Cause.NOT_CONNECTED, f"not connected{f' ({problem})' if problem else ''}")
        contents = {site: self._train_content(round_, site, state, objective) for site in sites if site in self.online}
        replies = self.link.exchange(MessageType.TRAIN, contents, self.online, round_, float(self.settings.reply_timeout_s))
        answers = []
        for site, reply in replies.items():
            self.traffic[site] = {"down": record_bytes(contents[site]), "up": record_bytes(reply.content) if _has_content(reply) else 0}
            answer = self._read_answer(round_, site, reply, outcomes[site], state)
            answers += [answer] if answer is not None else []
        return answers

    def protocol_sites(self, round_: int, adverts: list[KeyAdvert], outcomes: dict[str, SiteOutcome]) -> FlowerSites:
        def dropped(site: str, step: str, reason: str) -> None:
            if step == "unmask":  # its masked input is already in the sum; only its shares of the others are missing
                outcomes[site].reason = f"did not answer the unmasking step ({reason}); its input is in the sum"
            else:
                outcomes[site].mark(FAILED, Cause.SECURE_AGGREGATION, f"dropped out of secure aggregation at the {step!r} step: {reason}")

        self.folder.status("secure aggregation", round_, self.rounds)
        return FlowerSites(self.link, self.online, round_, float(self.settings.reply_timeout_s), adverts, dropped, self.traffic)

    def validate(self, round_: int, state: StateDict, outcomes: dict[str, SiteOutcome]) -> None:
        """The candidate at every connected site (as each runs it), each `validate_every` rounds; after the last, on the test splits too."""
        every = int(self.settings.validate_every)
        if round_ != self.rounds and not (every > 0 and round_ % every == 0):
            return
        self.folder.status("evaluating", round_, self.rounds)
        splits = ["val", "test"] if round_ == self.rounds else ["val"]
        online = self.link.online()
        contents = {site: instructions_content(state, Instructions(round_, site, self.plan.fingerprint, splits=splits)) for site in online}
        for site, reply in self.link.exchange(MessageType.EVALUATE, contents, online, round_, float(self.settings.reply_timeout_s)).items():
            problem, _ = reply_problem(reply)
            try:
                metrics = {} if problem else metrics_from_content(reply.content, round_)
            except MalformedMessage as err:
                problem, metrics = str(err), {}
            if problem:
                log.warning("round %d: site %r did not validate the new model: %s", round_, site, problem)
            outcomes[site].val_metrics = split_metrics(metrics, "val")
            if "test" in splits and metrics:
                self.tests[site] = split_metrics(metrics, "test")

    def privacy_spent(self) -> dict[str, dict[str, float]]:
        return dict(self.site_privacy)

    def short_round(self, round_: int) -> None:
        """A site that crashed is one that failed its round; the consortium waits for the next."""

    def close_round(self, record: RoundRecord, seconds: dict[str, float]) -> None:
        record.extra["flower"] = {"bytes": self.traffic, "test": self.tests, "seconds": seconds}

    def wait_for_sites(self, need: int, wait_s: float, required: int) -> dict[str, int]:
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

    def _train_content(self, round_: int, site: str, state: StateDict, objective: dict):
        instructions = Instructions(round_, site, self.plan.fingerprint, self.plan.seed(self.seed, round_, site), self.limits, objective)
        content = instructions_content(state, instructions)
        if self.updates_stay_at_sites:  # keep the update at the site and advertise keys instead
            content[SECAGG] = ConfigRecord({"weighting": self.secure_weighting})
        return content

    def _read_answer(self, round_: int, site: str, reply: Reply, outcome: SiteOutcome, state: StateDict) -> ModelUpdate | KeyAdvert | None:
        """The reply's update (or, under secure aggregation, key advert), or None with the site's outcome saying why
        (failed: no usable answer; rejected: a bad one; skipped: it declined, its privacy budget spent)."""
        problem, status = reply_problem(reply)
        cause, answer = Cause.NO_ANSWER, None
        if not problem:
            try:
                if DECLINED in reply.content:
                    return self._declined(round_, site, reply, outcome)
                if self.updates_stay_at_sites:
                    answer, report = self._advert(reply, round_, state), report_from_content(reply.content)
                else:
                    answer = update_from_content(reply.content, round_)
                if answer.site != site:
                    problem, status, cause = f"the reply is signed as site {answer.site!r}", REJECTED, Cause.MALFORMED
            except MalformedMessage as err:
                problem, status, cause = str(err), REJECTED, Cause.MALFORMED
        if problem:
            log.warning("round %d: site %r %s: %s", round_, site, status, problem)
            outcome.mark(status, cause, problem)
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
        outcome.mark(SKIPPED, Cause.PRIVACY_BUDGET, reason)
        self._note_privacy(site, metrics)

    def _note_privacy(self, site: str, metrics: dict[str, float]) -> None:
        if "epsilon" in metrics and self.privacy_cfg is not None:
            budget = float(self.privacy_cfg.get("epsilon", float("inf")))
            self.site_privacy[site] = {"epsilon": float(metrics["epsilon"]), "delta": float(metrics.get("delta", 0.0)), "epsilon_budget": budget}


def split_metrics(metrics: dict[str, float], split: str) -> dict[str, float]:
    """One split's metrics from an evaluation reply ("val_accuracy" -> "accuracy"), counts as ints."""
    prefix = f"{split}_"
    picked = {k[len(prefix):]: v for k, v in metrics.items() if k.startswith(prefix)}
    return {k: int(v) if k in COUNTS else v for k, v in picked.items()}


def _has_content(reply: Reply) -> bool:
    return not isinstance(reply, str) and reply.has_content()
