"""Diagnose one patient with a trained run's model, and say which inputs drove the diagnosis.

The run folder holds the resolved config (`config.yaml`) and the federated model
(`model.safetensors`, label list in its metadata), so the patient's files are
read by the same readers, with the same settings, as the training data were.
Attribution is by occlusion: drop one HPO term, one variant row or one whole
modality, and measure how much the top diagnosis's probability falls. It needs
no gradients and answers the clinician's question directly ("without this
finding, how sure would the model be?"), at the cost of one forward pass per
input, which is cheap for one patient.
"""
from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from federation.outputs import model_metadata, read_model
from modalities.base import DataError, Modality
from modalities.dataset import collate_batch
from modalities.hpo import load_hpo_index
from modalities.phenopacket_io import PatientRecord, read_phenopacket
from models.builder import build_model
from models.multimodal import MultimodalClassifier

PHENOPACKET_DIR = "phenopackets"


def load_run(run_dir: str | Path) -> tuple[DictConfig, MultimodalClassifier, list[str], dict]:
    """(config, model in eval mode, labels, readers) from a run folder."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(run_dir, "no such run folder")
    if not (run_dir / "config.yaml").is_file():
        raise DataError(run_dir / "config.yaml", "no config in the run folder: is this a finished run of scripts/train.py?")
    cfg = OmegaConf.load(run_dir / "config.yaml")
    weights = run_dir / "model.safetensors"
    metadata = model_metadata(weights)
    if not metadata.get("labels"):
        raise DataError(weights, "no label list in the model's metadata", field="labels")
    text = metadata["labels"]
    labels = json.loads(text) if text.startswith("[") else text.split(",")  # runs before labels were JSON
    state = read_model(weights)
    modalities = sorted({k.split(".")[1] for k in state if k.startswith("encoders.")})
    model = build_model(cfg.model, modalities, labels)
    model.load_state_dict(state)
    model.eval()
    readers = {m: instantiate(cfg.data.readers[m]) for m in modalities}
    return cfg, model, labels, readers


def patient_inputs(
    record: PatientRecord, readers: Mapping[str, Any], site_dir: Path, files: Mapping[str, str | Path] | None = None
) -> dict[str, torch.Tensor]:
    """The patient's modalities: from `files` (modality -> path) when given, else from the site folder layout."""
    files = dict(files or {})
    out = {}
    for modality, reader in readers.items():
        path = Path(files[modality]) if files.get(modality) else None
        if path is not None and not path.is_file():  # a file named for the patient must be read, never skipped
            raise DataError(path, "no such file (or not a regular file)", record=record.patient_id, field=modality)
        if path is None:
            tensor = reader.read_site(site_dir, [record]).get(record.patient_id)
        elif modality == Modality.VARIANTS:
            tensor = reader.read_file(path, record)
        elif modality == Modality.NOTES:
            text = path.read_text(encoding="utf-8")
            tensor = reader.encode(text) if text.strip() else None
        elif modality == Modality.IMAGING:
            tensor = reader.load(path, record.patient_id)
        elif modality == Modality.LABS:
            reader = copy.copy(reader)
            reader.file = str(path.resolve())  # site_dir / an absolute path is that path
            tensor = reader.read_site(site_dir, [record]).get(record.patient_id)
        else:
            raise ValueError(f"no explicit file for modality {modality!r}; it is read from the phenopacket")
        if tensor is not None and tensor.numel() > 0:
            out[modality] = tensor
    return out


def predict_patient(
    run_dir: str | Path,
    phenopacket: str | Path,
    site_dir: str | Path | None = None,
    files: Mapping[str, str | Path] | None = None,
    top_k: int = 5,
) -> dict[str, Any]:
    """Ranked differential diagnosis and occlusion attributions for one patient."""
    _, model, labels, readers = load_run(run_dir)
    phenopacket = Path(phenopacket)
    record = read_phenopacket(phenopacket)
    if site_dir is None:
        site_dir = phenopacket.parent.parent if phenopacket.parent.name == PHENOPACKET_DIR else phenopacket.parent
    inputs = patient_inputs(record, readers, Path(site_dir), files)
    if not inputs:
        raise DataError(phenopacket, "the patient has no input the model reads", record=record.patient_id)

    # One batch: the full input, then each input left out in turn.
    variants: list[dict[str, torch.Tensor]] = [inputs]
    occluded: list[tuple[str, Any]] = []
    for modality in inputs:
        variants.append({m: t for m, t in inputs.items() if m != modality})
        occluded.append(("modalities", modality))
    for kind in (Modality.PHENOTYPES, Modality.VARIANTS):
        rows = inputs.get(kind)
        for i in range(0 if rows is None else rows.shape[0]):
            reduced = torch.cat([rows[:i], rows[i + 1 :]])
            variants.append({**{m: t for m, t in inputs.items() if m != kind}, **({kind: reduced} if reduced.numel() else {})})
            occluded.append((str(kind), i))
    probabilities = _probabilities(model, readers, variants)

    full = probabilities[0]
    order = torch.argsort(full, descending=True, stable=True).tolist()
    target = order[0]
    drops = (full[target] - probabilities[1:, target]).tolist()
    attribution: dict[str, Any] = {"target": labels[target], "modalities": {}, "phenotypes": [], "variants": []}
    for (kind, key), drop in zip(occluded, drops):
        if kind == "modalities":
            attribution["modalities"][key] = drop
        elif kind == Modality.PHENOTYPES:
            attribution["phenotypes"].append({**_describe_term(int(inputs[kind][key])), "drop": drop})
        else:
            attribution["variants"].append({**_describe_variant(readers[kind], inputs[kind][key]), "row": key, "drop": drop})
    return {
        "patient_id": record.patient_id,
        "modalities_present": sorted(inputs),
        "differential": [
            {"rank": r + 1, "label": labels[i], "probability": float(full[i])} for r, i in enumerate(order[:top_k])
        ],
        "probabilities": {labels[i]: float(full[i]) for i in order},
        "attribution": attribution,
    }


@torch.no_grad()
def _probabilities(model: MultimodalClassifier, readers: Mapping[str, Any], inputs: list[dict]) -> torch.Tensor:
    items = [{"inputs": x, "label": 0, "patient_id": str(i)} for i, x in enumerate(inputs)]
    batch = collate_batch(items, model.modalities, readers)
    logits = model(batch["inputs"], batch["present"])
    return torch.softmax(logits.float(), dim=-1)


def _describe_term(signed_index: int) -> dict[str, Any]:
    hpo = load_hpo_index()
    term = hpo.term_ids[abs(signed_index) - 1]
    return {"term": term, "name": hpo.name(term), "excluded": signed_index < 0}


def _describe_variant(reader: Any, row: torch.Tensor) -> dict[str, Any]:
    columns = list(reader.columns)
    value = dict(zip(columns, row.tolist()))
    genes = load_hpo_index().gene_symbols
    gene = int(value["gene"])
    return {
        "gene": genes[gene - 1] if gene > 0 else None,
        "zygosity": {1.0: "heterozygous", 2.0: "homozygous"}.get(value["zygosity"]),
        "allele_frequency": None if value["af_missing"] else 10 ** (-6 * value["af_neglog10"]),
    }


def write_prediction(result: dict, path: str | Path) -> None:
    from federation.outputs import write_json

    write_json(Path(path), result)


def format_prediction(result: dict, n_terms: int = 10) -> str:
    """A short text summary for the terminal."""
    lines = [f"patient {result['patient_id']} ({', '.join(result['modalities_present'])})", "differential diagnosis:"]
    lines += [f"  {d['rank']:>2}. {d['label']:<14} {d['probability']:.3f}" for d in result["differential"]]
    attribution = result["attribution"]
    lines.append(f"what drove {attribution['target']} (drop in its probability when left out):")
    lines += [f"  modality {m:<12} {v:+.3f}" for m, v in sorted(attribution["modalities"].items(), key=lambda kv: -kv[1])]
    terms = sorted(attribution["phenotypes"], key=lambda t: -t["drop"])[:n_terms]
    lines += [f"  {'not ' if t['excluded'] else ''}{t['term']} {t['name']}: {t['drop']:+.3f}" for t in terms]
    lines += [f"  variant {v['gene'] or '?'} row {v['row']}: {v['drop']:+.3f}" for v in attribution["variants"][:n_terms]]
    return "\n".join(lines)


def to_json(result: dict) -> str:
    return json.dumps(result, indent=2)
