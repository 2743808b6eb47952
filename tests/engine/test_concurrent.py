"""Sites trained concurrently (threads with model replicas) give the round a sequential run gives."""
import threading

import pytest
import torch
from support import tiny_module, tiny_site

from federation.concurrent import ReplicaPool
from federation.engine import InProcessEngine
from federation.round_record import ACCEPTED
from federation.strategies.fedavg import FedAvg

LIMITS = {"max_epochs": 1}


def _without_dropout(module):
    """Dropout draws from torch's global generator, which threads share; without it training is deterministic."""
    for layer in module.modules():
        if isinstance(layer, torch.nn.Dropout):
            layer.p = 0.0
    return module


def _run(concurrent_sites: int, rounds: int = 2):
    sites = [tiny_site(f"s{i}", 8, i % 2 == 0, seed=i) for i in range(4)]
    module = _without_dropout(tiny_module())
    return InProcessEngine(sites, module, FedAvg(), rounds, LIMITS, seed=0, concurrent_sites=concurrent_sites).run(progress=False)


def test_concurrent_sites_give_the_sequential_global_model():
    sequential, concurrent = _run(1), _run(3)

    assert all(o.status == ACCEPTED for r in concurrent.records for o in r.outcomes)
    assert sequential.global_state.keys() == concurrent.global_state.keys()
    for key, value in sequential.global_state.items():
        torch.testing.assert_close(concurrent.global_state[key], value)
    moved = [k for k, v in concurrent.global_state.items() if v.is_floating_point()
             and not torch.equal(v, concurrent.records[0].previous_state[k])]
    assert moved  # training did change the model


def test_the_pool_runs_at_most_size_tasks_at_once_on_distinct_replicas_and_keeps_order():
    module = tiny_module()
    pool = ReplicaPool(module, size=2, device="cpu")
    barrier, lock, running, seen = threading.Barrier(2, timeout=30), threading.Lock(), [0], []

    def work(task, replica):
        with lock:
            running[0] += 1
            assert running[0] <= 2
            seen.append((threading.get_ident(), id(replica)))
        barrier.wait()  # both workers are inside at once: they overlap
        with lock:
            running[0] -= 1
        return task * 10

    assert pool.run([0, 1, 2, 3], work) == [0, 10, 20, 30]
    replicas = {r for _, r in seen}
    assert len(replicas) == 2 and id(module) not in replicas


def test_one_at_a_time_uses_the_engines_own_module():
    module = tiny_module()
    assert ReplicaPool(module, size=1, device="cpu").run([5], lambda task, replica: replica) == [module]
    with pytest.raises(ValueError, match="at least 1"):
        ReplicaPool(module, size=0, device="cpu")


def test_a_replica_leaves_the_trainer_its_module_was_last_fitted_by_behind():
    import lightning as L

    from federation.concurrent import replicate

    module = tiny_module()
    site = tiny_site("a", 4, True, seed=0)
    L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(module, train_dataloaders=site.loader("train"))

    replica = replicate(module)

    assert module._trainer is not None and replica._trainer is None
    assert all(torch.equal(a, b) for a, b in zip(module.state_dict().values(), replica.state_dict().values()))
