"""The Hydra Sweeper: builds the launcher, hands the study loop its config and a way to launch jobs."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from federation.sweeps.search import Search, SearchSettings


class OptunaSweeper(Sweeper):
    def __init__(self, sampler: Any, n_trials: int = 20, n_jobs: int = 1, study_name: str = "search", storage: str | None = None,
                 direction: Any = None, params: Mapping | None = None, enqueue: Sequence | None = None,
                 test_overrides: Sequence[str] | None = None, folds: Sequence[str] | None = None) -> None:
        plain = lambda node: OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
        direction = plain(direction)
        self.settings = SearchSettings(
            sampler=sampler, n_trials=int(n_trials), n_jobs=int(n_jobs), study_name=study_name, storage=storage,
            direction=[direction] if isinstance(direction, str) else direction, params=plain(params),
            enqueue=list(plain(enqueue) or []), test_overrides=list(plain(test_overrides) or ["data.evaluate_on=test"]),
            folds=[str(f) for f in plain(folds) or []],
        )
        self.config: DictConfig | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None
        search = Search(self.settings, self.config, self._launch, arguments)  # checks space, objective and data first
        search.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, search.sweep_dir / "multirun.yaml")  # the sweep's record, as Hydra's basic sweeper keeps it
        return search.run()

    def _launch(self, overrides: list[list[str]], first_job: int):
        return self.launcher.launch([list(o) for o in overrides], initial_job_idx=first_job)
