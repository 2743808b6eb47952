"""The loss-threshold membership-inference attack (Yeom et al. 2018) and its script's config."""
import os
from pathlib import Path

import pytest
import torch
from support import compose_config

from federation.privacy.membership import loss_threshold_attack

HEART = Path(os.environ.get("RAREFED_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")) / "heart"


def test_separated_losses_are_found_and_equal_ones_are_a_coin_toss():
    g = torch.Generator().manual_seed(0)
    members, outsiders = torch.rand(500, generator=g) * 0.1, 1 + torch.rand(500, generator=g)
    same_a, same_b = torch.rand(5000, generator=g), torch.rand(5000, generator=g)

    separated = loss_threshold_attack(members, outsiders)
    mixed = loss_threshold_attack(same_a, same_b)

    assert separated["auc"] == 1.0 and separated["advantage"] == 1.0
    assert abs(mixed["auc"] - 0.5) < 0.03 and mixed["advantage"] < 0.06


def test_lower_member_losses_raise_the_auc():
    g = torch.Generator().manual_seed(1)
    outsiders = torch.rand(2000, generator=g)

    aucs = [loss_threshold_attack(outsiders * shrink, torch.rand(2000, generator=g))["auc"] for shrink in (1.0, 0.8, 0.5)]

    assert aucs == sorted(aucs) and aucs[-1] > 0.7


def test_attack_needs_both_groups():
    with pytest.raises(ValueError, match="members and non-members"):
        loss_threshold_attack(torch.rand(3), torch.empty(0))


def test_membership_config_attacks_with_and_without_dp():
    cfg = compose_config(["attack.settings.dp_sgd.epsilon=0.5"], config_name="membership_inference")

    assert set(cfg.attack.settings) == {"no_dp", "dp_sgd"}
    assert cfg.attack.settings.dp_sgd.kind == "dp_sgd" and cfg.attack.settings.dp_sgd.epsilon == 0.5
    assert cfg.task == "heart_disease"


@pytest.mark.slow
@pytest.mark.skipif(not HEART.exists(), reason="Fed-Heart-Disease files not found")
def test_membership_script_writes_its_table(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, str(root / "scripts" / "membership_inference.py"), f"data.root={HEART}", "seeds=[0]",
           "federation.rounds=2", f"hydra.run.dir={tmp_path}"]

    subprocess.run(cmd, check=True, cwd=root, capture_output=True, timeout=1800)

    table = (tmp_path / "membership_inference.md").read_text()
    assert "| no_dp |" in table and "| dp_sgd |" in table
