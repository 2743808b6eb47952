"""FedProx: the proximal term, its effect on local updates, mu=0 as FedAvg, and the config end to end."""
import json
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from monai.networks.nets import ResNet

from federation.experiment import run_experiment
from federation.site import Site
from federation.state import get_state, trainable_keys
from federation.strategies.fedavg import FedAvg
from federation.strategies.fedprox import FedProx
from modalities.site_data import SiteData
from models.encoders.imaging import ImageEncoder
from models.encoders.labs import LabEncoder
from models.fusion import MaskedMeanFusion
from models.heads import ClassificationHead
from models.lit_module import MultimodalLitModule
from models.multimodal import MultimodalClassifier

CONF = Path(__file__).resolve().parents[1] / "conf"
EMBED, N_CLASSES, SIZE = 8, 3, (8, 8)


def _model() -> MultimodalLitModule:
    torch.manual_seed(0)
    backbone = ResNet("basic", [1, 1, 1, 1], [4, 4, 4, 4], spatial_dims=2, n_input_channels=1, feed_forward=False, no_max_pool=True)
    encoders = {"imaging": ImageEncoder(backbone, SIZE, embed_dim=EMBED), "labs": LabEncoder(["a", "b"], embed_dim=EMBED)}
    model = MultimodalClassifier(encoders, MaskedMeanFusion(["imaging", "labs"], EMBED), ClassificationHead(N_CLASSES, EMBED), EMBED)
    return MultimodalLitModule(model, optimizer=partial(torch.optim.SGD, lr=0.1))


def _items(n: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    return [
        {"patient_id": f"p{i}", "label": i % N_CLASSES, "inputs": {"labs": torch.randn(4, generator=g), "imaging": torch.randn(1, *SIZE, generator=g)}}
        for i in range(n)
    ]


def _collate(items: list[dict], modalities=("imaging", "labs")) -> dict:
    present = torch.tensor([[m in it["inputs"] for m in modalities] for it in items])
    inputs = {m: torch.stack([it["inputs"][m] for it in items]) for m in modalities}
    return {"inputs": inputs, "present": present, "label": torch.tensor([it["label"] for it in items]), "patient_id": [it["patient_id"] for it in items]}


def _site() -> Site:
    data = SiteData("a", ("imaging", "labs"), {"train": _items(8, 1), "val": _items(3, 2)})
    trainer = partial(L.Trainer, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    return Site(data, _collate, batch_size=4, make_trainer=trainer)


def _update(mu: float | None):
    module = _model()
    global_state = get_state(module, trainable_keys(module))
    objective = None if mu is None else FedProx(mu=mu).local_objective()
    return module, global_state, _site().train(module, global_state, {"max_epochs": 3}, round_=1, seed=1, objective=objective)


def test_proximal_term_is_half_mu_times_the_squared_distance_to_the_reference():
    # Prepare
    module = _model()
    reference = get_state(module, trainable_keys(module))
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.01 * torch.randn_like(p))
    params = dict(module.named_parameters())
    by_hand = sum(((params[k] - v) ** 2).sum() for k, v in reference.items() if k in params)

    # Execute
    module.set_proximal(0.3, reference)
    term = module.proximal_term()

    # Assert
    assert by_hand > 0
    assert torch.allclose(term, 0.15 * by_hand)
    assert set(module.proximal_reference) == {k for k, p in params.items() if p.requires_grad}  # parameters, not buffers


def test_a_large_mu_keeps_the_local_update_closer_to_the_global_model():
    _, _, free = _update(0.0)
    _, _, held = _update(10.0)

    assert 0 < held.norm() < free.norm()


def test_mu_zero_gives_exactly_the_fedavg_update():
    _, global_state, plain = _update(None)
    _, _, prox = _update(0.0)

    assert plain.deltas.keys() == prox.deltas.keys()
    assert all(torch.equal(plain.deltas[k], prox.deltas[k]) for k in plain.deltas)
    assert all(torch.equal(a, b) for a, b in zip(FedAvg().aggregate(global_state, [plain]).values(), FedProx(mu=0.0).aggregate(global_state, [prox]).values()))


def test_the_reference_is_cleared_after_training():
    module, _, _ = _update(1.0)

    assert module.proximal_reference is None and module.proximal_mu == 0.0


def test_sites_refuse_unknown_local_objectives_and_fedprox_refuses_negative_mu():
    module = _model()
    with pytest.raises(ValueError, match="unknown local objective"):
        _site().train(module, get_state(module, trainable_keys(module)), {"max_epochs": 1}, round_=1, seed=1, objective={"nope": 1})
    with pytest.raises(ValueError, match="mu"):
        FedProx(mu=-1.0)


def compose_train(overrides: list[str]):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("train", overrides=overrides)


def test_fedprox_config_composes_with_the_fedavg_keys():
    cfg = compose_train(["federation=fedprox"])
    fedavg = compose_train(["federation=fedavg"])

    assert cfg.federation.strategy._target_ == "federation.strategies.fedprox.FedProx"
    assert cfg.federation.strategy.mu == 0.01
    assert set(cfg.federation) == set(fedavg.federation)


def test_one_fedprox_round_writes_the_summary(tmp_path):
    cfg = compose_train(["experiment=smoke", "federation=fedprox", f"paths.data_dir={tmp_path / 'data'}", "progress=false",
                         "baselines.local=false", "baselines.pooled=false", "federation.rounds=1"])

    run_experiment(cfg, tmp_path / "out")

    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert "federated" in summary["overall"]
