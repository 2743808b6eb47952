"""Item 4: bytes a site sends per round, modality-aware vs the full model, with and without compression.

Sizes are what a transport would carry: each payload serialised with safetensors
(federation/compression.py `wire_bytes`), header included. A site's update is the
real one Site.train returns after one local step (only the keys it trained: its
modalities' encoders, fusion and head). The accuracy cost of each codec comes from
short federated runs, identical but for a CompressingSite around every site
(same seed, same data), compared with the uncompressed run.
"""
from __future__ import annotations

import statistics

from hydra.utils import instantiate
from perf_common import DEFAULT, SMOKE, Federation, build_federation, config, markdown_table

from federation.compression import CompressingSite, encode_update, make_codec, wire_bytes
from federation.driver.report import build_summary
from federation.engine import InProcessEngine
from federation.evaluation import predict
from federation.participation import Participation
from federation.state import get_state, set_state, trainable_keys
from federation.training_env import local_limits
from federation.validation import UpdateValidator

CODECS = {"none": {}, "fp16": {}, "int8": {}, "topk 10%": {"fraction": 0.1}, "topk 1%": {"fraction": 0.01}}


def codec(label: str):
    return make_codec(label.split()[0], **CODECS[label])


def site_sizes(fed: Federation) -> str:
    """Per site: the whole model, what travels of it, what this site's update holds, and that update compressed."""
    module = fed.module
    state = get_state(module, trainable_keys(module))
    whole = wire_bytes({k: v.contiguous() for k, v in module.state_dict().items()})
    travelling = wire_bytes(encode_update(state, codec("none")))
    rows = []
    for i, site in enumerate(fed.sites):
        update = site.train(module, state, {"max_steps": 1, "max_epochs": -1}, round_=1, seed=i)
        sizes = {label: wire_bytes(encode_update(update.deltas, codec(label))) for label in CODECS}
        rows.append([site.name, ", ".join(site.data.modalities), _kib(whole), _kib(travelling),
                     f"{_kib(sizes['none'])} ({100 * sizes['none'] / travelling:.0f}%)",
                     *[f"{_kib(sizes[label])} ({travelling / sizes[label]:.1f}x smaller)" for label in CODECS if label != "none"]])
    header = ["site", "modalities", "whole state dict (incl. frozen)", "trainable model (travels)", "modality-aware update (share)",
              *[f"update, {label}" for label in CODECS if label != "none"]]
    return markdown_table(header, rows)


def federated_accuracy(fed: Federation, label: str, initial: dict) -> dict:
    """One short federated run with every site's updates through the codec: test metrics and bytes sent per site and round."""
    cfg = fed.cfg
    set_state(fed.module, initial)
    sites = [CompressingSite(site, codec(label)) for site in fed.sites]
    result = InProcessEngine(
        sites, fed.module, instantiate(cfg.federation.strategy), cfg.federation.rounds, local_limits(cfg.federation), cfg.seed,
        participation=Participation(**cfg.federation.get("participation", {})),
        validator=UpdateValidator(**cfg.federation.get("validator", {})),
    ).run(progress=False)
    set_state(fed.module, result.global_state)
    predictions = {"federated": {s.name: predict(fed.module.model, s.loader("test")) for s in fed.sites}}
    summary = build_summary(cfg.task, predictions, {s.name: s.n_train for s in fed.sites})
    sent = statistics.mean(b for s in sites for b in s.sent_bytes)
    return {"accuracy": summary["overall"]["federated"]["accuracy"], "macro_auroc": summary["overall"]["federated"]["macro_auroc"],
            "mean_over_sites": summary["mean_over_sites"]["federated"]["accuracy"], "bytes": sent}


def accuracy_table(fed: Federation) -> str:
    initial = get_state(fed.module, trainable_keys(fed.module))
    results = {label: federated_accuracy(fed, label, initial) for label in CODECS}
    base = results["none"]
    rows = [[label, _kib(r["bytes"]), f"{r['accuracy']:.3f}", f"{r['accuracy'] - base['accuracy']:+.3f}", f"{r['mean_over_sites']:.3f}",
             f"{r['macro_auroc']:.3f}", f"{r['macro_auroc'] - base['macro_auroc']:+.3f}"] for label, r in results.items()]
    header = ["compression", "mean bytes per site and round", "top-1 (all test patients)", "vs none", "top-1 (mean over sites)",
              "macro AUROC", "vs none"]
    return markdown_table(header, rows)


def run(quick: bool) -> str:
    sizes = site_sizes(build_federation(config(DEFAULT)))
    short = ([*SMOKE, "federation.rounds=5", "federation.local_epochs=1"] if quick
             else [*DEFAULT, "federation.rounds=10", "federation.local_epochs=1"])
    fed = build_federation(config(short))
    accuracy = accuracy_table(fed)
    where = "experiment=smoke, 5 rounds" if quick else "the default synthetic consortium and model, 10 rounds of 1 local epoch"
    return ("## 4. Communication: bytes per site and round\n\n" + __doc__.split("\n\n", 1)[1].strip() + "\n\n"
            "Default synthetic consortium and model (MiniLM frozen: it never travels). Compressed sizes are of the "
            "modality-aware update.\n\n" + sizes
            + f"\nAccuracy cost of compression ({where}, one seed; error feedback at the site for every codec; "
            f"{'the tiny consortium has 12 test patients, so one patient is 0.083' if quick else '200 test patients'}):\n\n"
            + accuracy)


def _kib(n_bytes: float) -> str:
    return f"{n_bytes / 1024:,.0f} KiB"


if __name__ == "__main__":
    print(run(quick=True))
