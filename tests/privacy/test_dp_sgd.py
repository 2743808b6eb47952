"""Sample-level DP-SGD at a site: per-sample gradients, clipping, calibrated noise, the budget, layer checks."""
from functools import partial

import pytest
import torch
from monai.networks.nets import DenseNet
from support import (
    EMBED,
    N_CLASSES,
    SIZE,
    _Stack,
    compose_config,
    tiny_module,
    tiny_site,
)

from federation.privacy.accountant import BudgetExhausted, PrivacyBudget
from federation.privacy.dp_sgd import DPIncompatible, calibrate_noise, dp_fit
from federation.privacy.hooks import site_dp_cfg
from federation.privacy.public_parts import NothingTrainable, private_parameter_count
from federation.site import Site, SitePrivacy
from federation.state import get_state, trainable_keys
from modalities.dataset import collate_batch
from modalities.site_data import SiteData
from models.builder import build_model
from models.encoders.imaging import ImageEncoder
from models.encoders.labs import LabEncoder
from models.fusion import MaskedMeanFusion
from models.heads import ClassificationHead
from models.lit_module import MultimodalLitModule
from models.multimodal import MultimodalClassifier

N_FEATURES = 13


def tabular_module(lr=0.1) -> MultimodalLitModule:
    cfg = compose_config(["experiment=heart_flamby"])
    torch.manual_seed(0)
    model = build_model(cfg.model, ["tabular"], ["0", "1"])
    return MultimodalLitModule(model, optimizer=partial(torch.optim.SGD, lr=lr))


def tabular_site(n=40, batch_size=4, seed=0) -> Site:
    g = torch.Generator().manual_seed(seed)
    items = [{"patient_id": f"p{i}", "label": i % 2, "inputs": {"tabular": torch.randn(N_FEATURES, generator=g) + (i % 2)}} for i in range(n)]
    data = SiteData("heart_like", ("tabular",), {"train": items, "val": items[:4]})
    collate = partial(collate_batch, modalities=("tabular",), readers={"tabular": _Stack})
    return Site(data, collate, batch_size, make_trainer=None)


def group_norm_module() -> MultimodalLitModule:
    """Imaging (a MONAI DenseNet with group norm) + labs: DP-compatible, two modalities."""
    torch.manual_seed(0)
    backbone = DenseNet(spatial_dims=2, in_channels=1, out_channels=4, init_features=8, growth_rate=4, block_config=(2, 2), norm=("group", {"num_groups": 2}))
    encoders = {"imaging": ImageEncoder(backbone, SIZE, embed_dim=EMBED), "labs": LabEncoder(["a", "b"], embed_dim=EMBED)}
    model = MultimodalClassifier(encoders, MaskedMeanFusion(["imaging", "labs"], EMBED), ClassificationHead(N_CLASSES, EMBED), EMBED)
    return MultimodalLitModule(model, optimizer=partial(torch.optim.SGD, lr=0.1))


def trained(module, site, dp_cfg, steps=10, seed=0):
    start = get_state(module, trainable_keys(module))
    budget = PrivacyBudget(float("inf"), 1e-3, site.name)
    spent = dp_fit(module, site.loader("train"), {"max_steps": steps}, dp_cfg, budget, seed=seed)
    end = get_state(module, trainable_keys(module))
    return spent, {k: end[k] - start[k] for k in start}


def test_opacus_hooks_and_microbatches_compute_the_same_update():
    site = tabular_site()
    cfg = {"noise_multiplier": 0.0, "max_grad_norm": 0.5}

    _, with_hooks = trained(tabular_module(), site, cfg | {"per_sample_grads": "opacus"})
    _, with_loop = trained(tabular_module(), site, cfg | {"per_sample_grads": "microbatch"})

    assert any(d.abs().max() > 0 for d in with_hooks.values())
    for key in with_hooks:
        assert torch.allclose(with_hooks[key], with_loop[key], atol=1e-6), key


def test_per_sample_clipping_bounds_every_step():
    site, lr, clip, steps = tabular_site(n=40, batch_size=4), 0.1, 1e-3, 5
    module = tabular_module(lr)

    _, delta = trained(module, site, {"noise_multiplier": 0.0, "max_grad_norm": clip}, steps=steps)
    norm = torch.sqrt(sum((d**2).sum() for d in delta.values()))

    # each step moves lr * (sum of <= batch clipped gradients) / expected batch; a batch holds at most n samples
    assert 0 < norm <= steps * lr * clip * 40 / 4
    _, unclipped = trained(tabular_module(lr), site, {"noise_multiplier": 0.0, "max_grad_norm": 1e6}, steps=steps)
    assert torch.sqrt(sum((d**2).sum() for d in unclipped.values())) > 10 * norm


def test_noise_changes_the_update_and_is_seeded():
    site, cfg = tabular_site(), {"noise_multiplier": 1.0, "max_grad_norm": 1.0}

    _, first = trained(tabular_module(), site, cfg, seed=1)
    _, again = trained(tabular_module(), site, cfg, seed=1)
    _, other = trained(tabular_module(), site, cfg, seed=2)

    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.allclose(first[k], other[k]) for k in first)


def test_calibrated_noise_spends_the_budget_over_the_planned_rounds_then_stops():
    site, rounds, limits = tabular_site(n=40, batch_size=4), 3, {"max_steps": 5}
    privacy = {"kind": "dp_sgd", "epsilon": 2.0, "delta": 1e-3, "max_grad_norm": 1.0, "noise_multiplier": None, "per_sample_grads": "auto"}
    cfg = site_dp_cfg(privacy, site, limits, rounds)
    site.privacy, module = SitePrivacy(cfg, PrivacyBudget(2.0, 1e-3, site.name)), tabular_module()
    state = get_state(module, trainable_keys(module))

    spent = [site.train(module, state, limits, r, seed=r).metrics["epsilon"] for r in range(1, rounds + 1)]

    assert spent == sorted(spent) and 1.9 < spent[-1] <= 2.0
    with pytest.raises(BudgetExhausted, match="'heart_like' stops contributing.*budget of epsilon=2"):
        site.train(module, state, limits, rounds + 1, seed=9)


def test_stronger_privacy_needs_more_noise():
    assert calibrate_noise(0.1, 1e-3, 0.02, 1500) > calibrate_noise(1.0, 1e-3, 0.02, 1500) > 0
    assert calibrate_noise(float("inf"), 1e-3, 0.02, 1500) == 0.0


def test_auto_falls_back_to_microbatches_for_a_trainable_layer_that_holds_buffers():
    """The diagnosis model's knowledge head keeps its public annotation matrix as a buffer beside trainable
    weights: Opacus's hooks refuse such a layer, so `auto` must take one backward pass per sample instead."""
    module = tabular_module()
    layer = next(m for m in module.model.modules() if isinstance(m, torch.nn.Linear))
    layer.register_buffer("public_prior", torch.zeros(2))
    dp_cfg = {"noise_multiplier": 0.5, "max_grad_norm": 1.0, "per_sample_grads": "auto"}

    _, delta = trained(module, tabular_site(n=64, batch_size=32), dp_cfg, steps=3)

    assert any(d.abs().max() > 0 for d in delta.values())
    with pytest.raises(NotImplementedError, match="buffers"):  # what `auto` steers clear of
        trained(module, tabular_site(n=64, batch_size=32), dp_cfg | {"per_sample_grads": "opacus"}, steps=1)


def test_batch_norm_models_are_refused_by_name():
    site = tiny_site("a", 8, with_imaging=True, seed=0)

    with pytest.raises(DPIncompatible, match="BatchNorm"):
        dp_fit(tiny_module(), site.loader("train"), {"max_steps": 1}, {"noise_multiplier": 1.0, "max_grad_norm": 1.0}, PrivacyBudget(10, 1e-3))


def test_multimodal_model_trains_with_microbatches_when_a_site_lacks_a_modality():
    module = group_norm_module()
    mixed = tiny_site("mixed", 8, with_imaging=True, seed=0)
    mixed.data.splits["train"] += tiny_site("labs_only", 8, with_imaging=False, seed=1).data.splits["train"]

    spent, delta = trained(module, mixed, {"noise_multiplier": 0.5, "max_grad_norm": 1.0}, steps=3)

    assert torch.isfinite(torch.tensor(spent.epsilon))
    assert all(torch.isfinite(d).all() for d in delta.values())
    assert any(d.abs().max() > 0 for k, d in delta.items() if ".imaging." in k)


def test_frozen_parts_stay_put_and_only_the_private_part_moves():
    module, site = group_norm_module(), tiny_site("a", 8, with_imaging=True, seed=0)
    freeze = ["encoders.imaging.backbone.*"]

    _, delta = trained(module, site, {"noise_multiplier": 0.5, "max_grad_norm": 1.0, "freeze": freeze}, steps=3)

    backbone = [k for k in delta if k.startswith("model.encoders.imaging.backbone.")]
    assert backbone and all(torch.equal(delta[k], torch.zeros_like(delta[k])) for k in backbone)
    assert any(d.abs().max() > 0 for k, d in delta.items() if k not in backbone)
    assert all(p.requires_grad for p in module.model.parameters()), "freezing lasts for the private fit only"


def test_private_parameter_count_leaves_out_the_frozen_parts():
    model = group_norm_module().model
    everything = sum(p.numel() for p in model.parameters())
    backbone = sum(p.numel() for p in model.encoders["imaging"].backbone.parameters())

    assert private_parameter_count(model, []) == everything
    assert private_parameter_count(model, ["encoders.imaging.backbone.*"]) == everything - backbone


def test_a_freeze_list_that_leaves_nothing_trainable_is_refused_before_training():
    module, site = group_norm_module(), tiny_site("a", 8, with_imaging=True, seed=0)
    start = get_state(module, trainable_keys(module))
    budget = PrivacyBudget(10.0, 1e-3, site.name)

    with pytest.raises(NothingTrainable, match=r"privacy\.freeze=\['\*'\]: freezes every trainable parameter"):
        dp_fit(module, site.loader("train"), {"max_steps": 1}, {"noise_multiplier": 1.0, "max_grad_norm": 1.0, "freeze": ["*"]}, budget)

    assert budget.spent() == (0.0, 0.0)
    assert all(torch.equal(start[k], v) for k, v in get_state(module, list(start)).items())


def test_a_larger_logical_batch_takes_fewer_steps_at_a_higher_sampling_rate():
    site = tabular_site(n=40, batch_size=4)
    cfg = {"noise_multiplier": 1.0, "max_grad_norm": 1.0}

    per_batch = dp_fit(tabular_module(), site.loader("train"), {"max_epochs": 2}, cfg, PrivacyBudget(float("inf"), 1e-3))
    logical = dp_fit(tabular_module(), site.loader("train"), {"max_epochs": 2}, cfg | {"batch_size": 20}, PrivacyBudget(float("inf"), 1e-3))
    capped = dp_fit(tabular_module(), site.loader("train"), {"max_epochs": 1}, cfg | {"batch_size": 400}, PrivacyBudget(float("inf"), 1e-3))

    assert (per_batch.steps, per_batch.sample_rate) == (20, 0.1)
    assert (logical.steps, logical.sample_rate) == (4, 0.5)
    assert (capped.steps, capped.sample_rate) == (1, 1.0)


def test_a_site_smaller_than_the_loader_batch_samples_every_patient_at_rate_one():
    """Heart cut into 50 shards leaves sites of 3 training patients under a loader batch of 4: a sampling rate above 1
    means nothing to the accountant, and the plan was refused as if no noise could meet the budget."""
    small = tabular_site(n=3, batch_size=4)

    spent = dp_fit(tabular_module(), small.loader("train"), {"max_epochs": 2}, {"noise_multiplier": 1.0, "max_grad_norm": 1.0},
                   PrivacyBudget(float("inf"), 1e-3))

    assert (spent.steps, spent.sample_rate) == (2, 1.0)


def test_local_epochs_of_the_dp_config_replace_the_federations():
    site = tabular_site(n=40, batch_size=4)
    cfg = {"noise_multiplier": 1.0, "max_grad_norm": 1.0, "local_epochs": 1}

    spent = dp_fit(tabular_module(), site.loader("train"), {"max_epochs": 3}, cfg, PrivacyBudget(float("inf"), 1e-3))

    assert spent.steps == 10


def test_a_frozen_batch_norm_backbone_trains_privately_as_a_fixed_feature_extractor():
    module, site = tiny_module(), tiny_site("a", 8, with_imaging=True, seed=0)
    freeze = ["encoders.imaging.backbone.*"]

    _, delta = trained(module, site, {"noise_multiplier": 0.5, "max_grad_norm": 1.0, "freeze": freeze}, steps=2)

    backbone = {k: d for k, d in delta.items() if k.startswith("model.encoders.imaging.backbone.")}
    assert any(k.endswith("running_mean") for k in backbone), "BatchNorm buffers are part of the update"
    assert all(torch.equal(d, torch.zeros_like(d)) for d in backbone.values()), "statistics and weights stay as they were"
    assert any(d.abs().max() > 0 for k, d in delta.items() if k not in backbone)
    assert module.model.encoders["imaging"].backbone.training, "training mode restored after the fit"
