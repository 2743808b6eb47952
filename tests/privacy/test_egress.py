"""What leaves a site: the allow-list refuses anything else, and a real round sends no raw input."""
import csv
import re
import struct
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from support import compose_config

from federation.privacy.egress import (
    EgressViolation,
    check_egress,
    serialise_message,
    serialise_update,
)
from federation.privacy.secagg import SecAggClient, SecAggServer, run_secure_aggregation
from federation.site import Site
from federation.state import get_state, trainable_keys
from federation.training_env import local_limits, quiet_lightning
from federation.update import ModelUpdate
from modalities.consortium import load_consortium
from modalities.dataset import collate_batch
from models.builder import build_model
from models.lit_module import MultimodalLitModule

SHAPES = {"head.w": (2, 3), "head.b": (2,)}


def update(**changes) -> ModelUpdate:
    fields = dict(site="site_a", round=1, deltas={"head.w": torch.randn(2, 3), "head.b": torch.randn(2)},
                  sample_counts={"head.w": 5, "head.b": 5}, n_samples=5, metrics={"train_loss": 0.7})
    return ModelUpdate(**(fields | changes))


# --- the allow-list ---------------------------------------------------------------------------------

def test_a_plain_update_passes():
    check_egress(serialise_update(update()), SHAPES)


@pytest.mark.parametrize("bad, message", [
    (dict(deltas={"head.w": torch.randn(2, 3), "notes.raw": torch.randn(4)}, sample_counts={"head.w": 5}), "not on the allow-list"),
    (dict(sample_counts={"head.w": 5, "notes.raw": 5}), "known keys"),
    (dict(deltas={"head.w": torch.randn(3, 2)}, sample_counts={"head.w": 5}), r"allowed \('F32',\) \(2, 3\)"),
    (dict(metrics={"train_loss": 0.7, "first_patient_age": 61.0}), "metrics .* not on the allow-list"),
    (dict(site="Jane Doe, 12 Main St"), "not an identifier"),
    (dict(sample_counts={"head.w": 5, "head.b": -1}), "non-negative integers"),
])
def test_anything_else_is_refused(bad, message):
    with pytest.raises(EgressViolation, match=message):
        check_egress(serialise_update(update(**bad)), SHAPES)


def test_trailing_bytes_and_extra_metadata_are_refused():
    from safetensors.numpy import save

    with pytest.raises(EgressViolation, match="bytes after the last declared array"):
        check_egress(serialise_update(update()) + b"patient P0001", SHAPES)
    smuggled = save({"head.b": np.zeros(2, np.float32)}, metadata={"kind": "model_update", "fields": "{}", "note": "65-year-old man"})
    with pytest.raises(EgressViolation, match="exactly 'kind' and 'fields'"):
        check_egress(smuggled, SHAPES)


def test_protocol_messages_pass_with_their_roster_and_not_without():
    updates = [update(site=s) for s in ("site_a", "site_b", "site_c")]
    sent, server = [], SecAggServer(threshold=2)

    run_secure_aggregation([SecAggClient(u.site, u.deltas, u.sample_counts) for u in updates], server, 1,
                           observe=lambda site, m: sent.append(serialise_message(m)))

    assert len(sent) == 4 * 3
    for message in sent:
        check_egress(message, SHAPES, server.last_roster)
    with pytest.raises(EgressViolation, match="needs the round's roster"):
        check_egress(sent[-1], SHAPES)


# --- a real round on the synthetic consortium -----------------------------------------------------

@pytest.fixture(scope="module")
def round_on_synthetic(tmp_path_factory):
    """One round of the smoke experiment; every byte each site sends, plain and through secure aggregation."""
    quiet_lightning()
    data_dir = tmp_path_factory.mktemp("data")
    cfg = compose_config(["experiment=smoke", f"paths.data_dir={data_dir}", "progress=false"])
    consortium = load_consortium(cfg.data, seed=cfg.seed)
    model = build_model(cfg.model, consortium.modalities, consortium.label_space.labels)
    module = MultimodalLitModule(model, optimizer=instantiate(cfg.model.optimizer), **cfg.model.get("training", {}))
    collate = partial(collate_batch, modalities=model.modalities, readers=consortium.readers)
    sites = [Site(data, collate, cfg.data.batch_size, instantiate(cfg.trainer)) for data in consortium.sites]
    state = get_state(module, trainable_keys(module))
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    updates = [site.train(module, state, local_limits(cfg.federation), 1, seed=i) for i, site in enumerate(sites)]
    plain = [serialise_update(u) for u in updates]
    protocol, server = [], SecAggServer(threshold=2)
    run_secure_aggregation([SecAggClient(u.site, u.deltas, u.sample_counts) for u in updates], server, 1,
                           observe=lambda site, m: protocol.append(serialise_message(m)))
    return Path(cfg.data.root), sites, shapes, plain, protocol, server.last_roster


def raw_fingerprints(root: Path, sites) -> dict[str, list[bytes]]:
    """Byte strings that would betray raw input: ids, note text, variant positions, lab values, pixel runs."""
    found = {"patient id": [], "note text": [], "variant position": [], "lab value": [], "image pixels": [], "HPO term": []}
    for site in sites:
        folder = root / site.name
        for split in site.data.splits.values():
            for item in split:
                found["patient id"].append(item["patient_id"].encode())
                if "labs" in item["inputs"]:
                    found["lab value"] += _runs(item["inputs"]["labs"], 2)
                if "imaging" in item["inputs"]:
                    found["image pixels"] += _runs(item["inputs"]["imaging"], 4)[::16]
        for packet in sorted((folder / "phenopackets").glob("*.json")):
            found["HPO term"] += [t.encode() for t in re.findall(r"HP:\d{7}", packet.read_text())]
        for note in sorted((folder / "notes").glob("*.txt")):
            text = note.read_bytes()
            found["note text"] += [text[i : i + 24] for i in range(0, len(text) - 24, 96)]
        for vcf in sorted((folder / "vcf").glob("*.vcf")):
            for line in vcf.read_text().splitlines():
                if not line.startswith("#"):
                    pos = int(line.split("\t")[1])
                    found["variant position"] += [str(pos).encode(), struct.pack("<q", pos)]
        if (folder / "labs.csv").exists():
            with open(folder / "labs.csv") as handle:
                found["lab value"] += [f"{r['analyte']},{r['value']}".encode() for r in csv.DictReader(handle)]
        for png in sorted((folder / "images").glob("*.png"))[:20]:
            data = png.read_bytes()
            found["image pixels"] += [data[i : i + 32] for i in range(64, len(data) - 32, 256)]
    return found


def _runs(tensor: torch.Tensor, width: int) -> list[bytes]:
    """float32 windows of `width` consecutive values with at least two distinct non-zero values."""
    values = tensor.float().reshape(-1).numpy()
    out = []
    for i in range(0, len(values) - width + 1, width):
        window = values[i : i + width]
        if len(set(window[window != 0].tolist())) >= 2:
            out.append(window.tobytes())
    return out


def leaks(haystack: bytes, fingerprints: dict[str, list[bytes]]) -> dict[str, int]:
    """How many distinct fingerprints of each kind occur in `haystack`.

    A numpy prefilter finds candidate places from each pattern's most varied 4 bytes
    (zero runs are common in deltas), then each candidate is compared in full.
    """
    by_anchor: dict[int, list[tuple[str, bytes, int]]] = {}
    for kind, patterns in fingerprints.items():
        for pattern in set(patterns):
            assert len(pattern) >= 4, (kind, pattern)
            at = max(range(len(pattern) - 3), key=lambda i: len(set(pattern[i : i + 4])))
            by_anchor.setdefault(int.from_bytes(pattern[at : at + 4], "little"), []).append((kind, pattern, at))
    seen = np.zeros(1 << 24, dtype=bool)  # a bitmap on the anchors' top 24 bits: one gather per word
    seen[np.fromiter(by_anchor, dtype=np.uint32) >> 8] = True
    buffer = np.frombuffer(haystack, dtype=np.uint8)
    found: dict[str, set] = {kind: set() for kind in fingerprints}
    for offset in range(4):
        words = buffer[offset : offset + (len(buffer) - offset) // 4 * 4].view("<u4")
        for index in np.nonzero(seen[words >> 8])[0]:
            for kind, pattern, at in by_anchor.get(int(words[index]), []):
                start = offset + 4 * int(index) - at
                if start >= 0 and haystack[start : start + len(pattern)] == pattern:
                    found[kind].add(pattern)
    return {kind: len(hits) for kind, hits in found.items()}


def test_every_message_of_a_real_round_passes_the_check(round_on_synthetic):
    _, _, shapes, plain, protocol, roster = round_on_synthetic

    for message in plain:
        check_egress(message, shapes)
    for message in protocol:
        check_egress(message, shapes, roster)


def test_no_raw_input_is_in_any_byte_a_site_sends(round_on_synthetic):
    root, sites, _, plain, protocol, _ = round_on_synthetic
    fingerprints = raw_fingerprints(root, sites)
    haystack = b"\x00".join(plain + protocol)

    found = leaks(haystack, fingerprints)

    assert all(len(fingerprints[k]) > 0 for k in fingerprints), {k: len(v) for k, v in fingerprints.items()}
    assert found == {kind: 0 for kind in fingerprints}


def test_the_leak_detector_finds_planted_raw_input(round_on_synthetic):
    root, sites, _, plain, _, _ = round_on_synthetic
    fingerprints = raw_fingerprints(root, sites)
    planted = {kind: patterns[len(patterns) // 2] for kind, patterns in fingerprints.items()}

    for kind, pattern in planted.items():
        found = leaks(plain[0][:500] + pattern + plain[0][500:], {kind: [pattern]})
        assert found[kind] == 1, kind
