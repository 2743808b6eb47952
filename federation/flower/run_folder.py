"""What the deployed coordinator writes into its run folder (`deploy.run_dir`), each file atomically.

`flwr pull` cannot fetch a ServerApp's artefacts here, so the ServerApp writes
them itself, on the coordinator's disk:

- `checkpoint.pt`: the coordinator's state after the last completed round (resume);
- `status.json`: phase and round, rewritten as the run moves (for scripts and tests);
- `rounds.json`: per round the decision and every site's status, reason and bytes moved;
- `metrics.csv`: one row per round and site, as the in-process run writes it;
- `model.safetensors`: the final global model, with the label list in its metadata;
- `final_metrics.json`: each site's metrics of the final model on its test split;
- `config.yaml`: the resolved coordinator config.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from federation.flower.checkpoint import CheckpointStore, CoordinatorState
from federation.outputs import write_json, write_model, write_rows, write_text

RUNNING, FINISHED, FAILED = "running", "finished", "failed"


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.checkpoint = CheckpointStore(self.path / "checkpoint.pt")

    def status(self, phase: str, round_: int, rounds: int, state: str = RUNNING, **extra) -> None:
        status = {"state": state, "phase": phase, "round": round_, "rounds": rounds, "time": time.time(), **extra}
        write_json(self.path / "status.json", status)

    def read_status(self) -> dict:
        path = self.path / "status.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def write_results(self, cfg: DictConfig, state: CoordinatorState, model_state: dict[str, torch.Tensor]) -> None:
        final = state.rounds[-1].get("test", {}) if state.rounds else {}
        write_text(self.path / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        write_json(self.path / "rounds.json", {"rounds": state.rounds})
        write_rows(self.path / "metrics.csv", state.history)
        write_model(self.path / "model.safetensors", model_state, {"labels": json.dumps(list(cfg.data.labels)), "task": str(cfg.task)})
        write_json(self.path / "final_metrics.json", final)
