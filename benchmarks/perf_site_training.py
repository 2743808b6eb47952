"""Item 3: samples per second of a site's local round, through Site.train vs plain Lightning vs plain torch.

The three run the same LightningModule on the same site's DataLoader for the same
epochs from the same start weights, interleaved, several times; the table gives
medians. Site.train adds to Lightning's fit what federation needs (load the global
state, seed, class counts, read the local state back, the deltas and sample counts):
its overhead over the plain Lightning fit is what the 10% target is about.
Plain torch shows what Lightning itself costs at this scale (no target).
"""
from __future__ import annotations

import lightning as L
from perf_common import DEFAULT, SMOKE, Federation, build_federation, config, interleaved_medians, markdown_table

from federation.site import Site
from federation.state import get_state, set_state, trainable_keys
from models.lit_module import drop_modalities

TARGET_OVERHEAD = 0.10


def wrapper_round(fed: Federation, site: Site, state: dict, epochs: int) -> None:
    site.train(fed.module, state, {"max_epochs": epochs}, round_=1, seed=1)


def lightning_round(fed: Federation, site: Site, state: dict, epochs: int) -> None:
    set_state(fed.module, state)
    L.seed_everything(1, verbose=False)
    trainer = site.make_trainer(max_epochs=epochs)
    trainer.fit(fed.module, train_dataloaders=site.loader("train", shuffle=True, seed=1))


def torch_round(fed: Federation, site: Site, state: dict, epochs: int) -> None:
    """The training step of MultimodalLitModule (modality dropout, loss, backward, step) without Lightning."""
    module = fed.module
    set_state(module, state)
    L.seed_everything(1, verbose=False)
    optimizer = module.configure_optimizers()
    module.train()
    loader = site.loader("train", shuffle=True, seed=1)
    for _ in range(epochs):
        for batch in loader:
            if module.hparams.modality_dropout > 0:
                batch = {**batch, "present": drop_modalities(batch["present"], module.hparams.modality_dropout)}
            optimizer.zero_grad()
            module.loss(module(batch), batch["label"]).backward()
            optimizer.step()


def measure(label: str, overrides, site_name: str | None, epochs: int, repeats: int) -> list:
    fed = build_federation(config(overrides))
    site = max(fed.sites, key=lambda s: s.n_train) if site_name is None else next(s for s in fed.sites if s.name == site_name)
    state = get_state(fed.module, trainable_keys(fed.module))
    wrapper_round(fed, site, state, 1)  # warm-up: first-call costs (and the notes cache, where there is one)
    seconds = interleaved_medians({
        "wrapper": lambda: wrapper_round(fed, site, state, epochs),
        "lightning": lambda: lightning_round(fed, site, state, epochs),
        "torch": lambda: torch_round(fed, site, state, epochs),
    }, repeats)
    samples = site.n_train * epochs
    overhead = {kind: getattr(seconds["wrapper"], kind) / getattr(seconds["lightning"], kind) - 1 for kind in ("wall", "cpu")}
    verdict = "met" if overhead["cpu"] <= TARGET_OVERHEAD else "not met"
    rate = {name: f"{samples / t.cpu:,.1f}" for name, t in seconds.items()}
    return [label, f"{site.name} ({site.n_train})", epochs, rate["wrapper"], rate["lightning"], rate["torch"],
            f"{100 * overhead['wall']:+.1f}%", f"{100 * overhead['cpu']:+.1f}% ({verdict})",
            f"{100 * (seconds['lightning'].cpu / seconds['torch'].cpu - 1):+.0f}%"]


def run(quick: bool) -> str:
    repeats = 5 if quick else 9
    rows = [measure("smoke (tiny consortium, tiny BERT)", SMOKE, None, epochs=2, repeats=repeats)]
    rows.append(measure("default (synthetic consortium, MiniLM cached)", DEFAULT, None, epochs=2, repeats=3 if quick else 7))
    header = ["model", "site (train patients)", "epochs", "Site.train samples/CPU s", "plain Lightning samples/CPU s", "plain torch samples/CPU s",
              "wrapper overhead, wall", "wrapper overhead, CPU (target <= 10%)", "Lightning over torch, CPU"]
    note = (f"Median of {repeats} interleaved repetitions (smoke; {3 if quick else 7} for default) of one local round: "
            "the given epochs over the largest site's training split, batch size from the data config, after one warm-up "
            "round. Rates and the overhead verdict use the process's CPU time (see the note on threads above); the wall-time "
            "overhead is beside it.")
    return "## 3. Site training: Site.train vs plain Lightning vs plain torch\n\n" + note + "\n\n" + markdown_table(header, rows)


if __name__ == "__main__":
    print(run(quick=True))
