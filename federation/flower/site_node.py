"""A deployed site's side of a round: the ClientApp's work, free of Flower's process model.

Flower starts a fresh ClientApp process for every message, so each message
composes the site's config, builds the model and gets this site's own data again
(prepared once, then from the node's cache: site_cache.py); what `Site` keeps between rounds (FedBN's normalisation layers, SCAFFOLD's
control variate) is carried in the node's run state (`context.state`), which
never leaves the site. Every refusal (another consortium config, a message meant
for another site) raises with the reason; Flower returns it to the coordinator.

Under `privacy=dp_sgd` the site trains with DP-SGD (Opacus) as in-process, its
budget (the accountant's history) kept in the run state too, and on the site's
own disk (`deploy.budget_file`, per Flower run), so that a restarted SuperNode
resumes its accountant instead of starting afresh; a round that would overrun it
is declined with the reason. Under secure aggregation the update stays
here and the reply is a key advert (federation/flower/secagg.py).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, RecordDict
from omegaconf import DictConfig

from federation.evaluation import evaluate
from federation.flower import secagg, timing
from federation.flower.builder import build_module, build_site, load_own_site
from federation.flower.config import site_config
from federation.flower.plan import ConsortiumPlan, consortium_plan
from federation.flower.records import (
    META,
    Instructions,
    declined_content,
    metrics_content,
    read_instructions,
    record_to_state,
    state_to_record,
    update_to_content,
)
from federation.flower.site_cache import SiteCache
from federation.outputs import write_json
from federation.privacy.accountant import BudgetExhausted, PrivacyBudget
from federation.privacy.hooks import make_sites_private, privacy_kind
from federation.site import Site
from federation.state import StateDict, set_state
from federation.training_env import evaluation_device, quiet_lightning, use_threads
from federation.update import ModelUpdate

SITE_MEMORY = ("kept_local", "control")
"""Site attributes that must survive between rounds (StateDicts): FedBN's own norms, SCAFFOLD's c_i."""
MEMORY_PREFIX = "site."
BUDGET = "site.privacy_budget"
"""DP-SGD: this site's accountant history (a JSON string); it never leaves the site."""


def identify(run_config: Mapping, node_config: Mapping) -> RecordDict:
    """Which consortium site this node is, and the plan it was configured with (no data is read)."""
    cfg = site_config(run_config, node_config)
    plan = consortium_plan(cfg.data)
    plan.site_index(str(cfg.deploy.site))
    return RecordDict({META: ConfigRecord({"site": str(cfg.deploy.site), "plan": plan.fingerprint})})


class SiteNode:
    def __init__(self, cfg: DictConfig, plan: ConsortiumPlan, memory: RecordDict, run_id: int = 0):
        quiet_lightning()
        use_threads(cfg.get("torch_threads"))  # sites share their machines: torch's default, a thread per core,
        # made a train message 4x slower on 2 busy cores (3.0 s against 0.7 s)
        self.cfg, self.plan, self.memory, self.run_id = cfg, plan, memory, run_id
        self.name = str(cfg.deploy.site)
        self.module = build_module(cfg, plan)
        timing.mark("model")
        consortium = load_own_site(cfg, plan, SiteCache.from_config(cfg.deploy.get("site_cache")))
        timing.mark("data")
        self.site = build_site(cfg, consortium, self.module)
        self.device = evaluation_device(str(cfg.trainer.accelerator))
        restore_memory(self.site, memory)

    @classmethod
    def from_context(cls, run_config: Mapping, node_config: Mapping, memory: RecordDict, run_id: int = 0) -> SiteNode:
        cfg = site_config(run_config, node_config)
        timing.mark("config")
        return cls(cfg, consortium_plan(cfg.data), memory, run_id)

    def train(self, content: RecordDict) -> RecordDict:
        state, instructions = self._accept(content)
        self._make_private(instructions)
        try:
            update = self._train(state, instructions)
            timing.mark("work")
        except BudgetExhausted as spent:  # the site stops contributing, and says so
            return declined_content(self.name, instructions.round, str(spent), self._spent())
        finally:
            self._keep_budget()  # also what a fit that crashed half-way has spent
        keep_memory(self.site, self.memory)
        if secagg.SECAGG in content:
            return secagg.start(update, str(content[secagg.SECAGG]["weighting"]), self.memory)
        return update_to_content(update)

    def evaluate(self, content: RecordDict) -> RecordDict:
        """The global model, as this site runs it (FedBN: its own norms), on the splits asked for."""
        state, instructions = self._accept(content)
        set_state(self.module, self.site.personalise(state))
        metrics = {}
        for split in instructions.splits or ["val"]:
            loader = self.site.loader(split)
            # n_patients, as in-process: the promotion rule tells a real drop from the noise of a small split
            scores = evaluate(self.module.model, loader, self.device) | {"n_patients": len(loader.dataset)}
            metrics |= {f"{split}_{name}": value for name, value in scores.items()}
        timing.mark("work")
        return metrics_content(self.name, instructions.round, metrics)

    def _train(self, state: StateDict, instructions: Instructions) -> ModelUpdate:
        """The one call into local training, exactly as the in-process engine makes it."""
        return self.site.train(self.module, state, instructions.limits, instructions.round, seed=instructions.seed,
                               objective=instructions.objective)

    def _make_private(self, instructions: Instructions) -> None:
        """DP-SGD: the noise calibrated to this site's planned rounds (as in-process), its budget as spent so far."""
        if privacy_kind(self.cfg.get("privacy")) != "dp_sgd":
            return
        make_sites_private(self.cfg.privacy, [self.site], instructions.limits, int(self.cfg.federation.rounds), self.module.model)
        saved = self.memory.config_records.get(BUDGET)
        state = json.loads(saved["state"]) if saved is not None else self._budgets_on_disk().get(str(self.run_id))
        if state is not None:
            self.site.privacy.budget = PrivacyBudget.from_state_dict(state)

    def _keep_budget(self) -> None:
        """The accountant into the run state, and onto this site's disk (atomically) where it outlives the SuperNode."""
        if self.site.privacy is None:
            return
        state = self.site.privacy.budget.state_dict()
        self.memory[BUDGET] = ConfigRecord({"state": json.dumps(state)})
        if self.cfg.deploy.get("budget_file"):
            write_json(Path(self.cfg.deploy.budget_file), self._budgets_on_disk() | {str(self.run_id): state})

    def _budgets_on_disk(self) -> dict:
        """Per Flower run id, the accountant state this site last saved; a damaged file stops the site, naming it."""
        path = Path(self.cfg.deploy.budget_file) if self.cfg.deploy.get("budget_file") else None
        if path is None or not path.exists():
            return {}
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: the site's privacy budget file is not valid JSON ({error}); restore it from a backup") from None

    def _spent(self) -> dict[str, float]:
        if self.site.privacy is None:
            return {}
        epsilon, delta = self.site.privacy.budget.spent()
        return {"epsilon": epsilon, "delta": delta}

    def _accept(self, content: RecordDict) -> tuple[StateDict, Instructions]:
        state, instructions = read_instructions(content)
        if instructions.plan != self.plan.fingerprint:
            raise ValueError(
                f"site {self.name!r}: the coordinator's consortium plan ({instructions.plan}) differs from this site's "
                f"({self.plan.fingerprint}): sites, modalities or labels in the data config do not match"
            )
        if instructions.site != self.name:
            raise ValueError(f"this node is site {self.name!r}, but the message is for site {instructions.site!r}")
        return state, instructions


def restore_memory(site: Site, memory: RecordDict) -> None:
    for name in SITE_MEMORY:
        record = memory.array_records.get(MEMORY_PREFIX + name)
        if record is not None and hasattr(site, name):
            setattr(site, name, record_to_state(record))


def keep_memory(site: Site, memory: RecordDict) -> None:
    for name in SITE_MEMORY:
        tensors = getattr(site, name, None)
        if tensors:
            memory[MEMORY_PREFIX + name] = state_to_record({k: torch.as_tensor(v) for k, v in tensors.items()})
        elif MEMORY_PREFIX + name in memory:
            memory[MEMORY_PREFIX + name] = ArrayRecord()
