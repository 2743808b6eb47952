from collections import Counter
from functools import partial

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import DataLoader

from modalities.base import DataError
from modalities.dataset import collate_batch, load_site, site_labels
from modalities.imaging import ImageReader
from modalities.labels import LabelSpace
from modalities.labs import LabReader
from modalities.phenopacket_io import read_cohort
from modalities.phenotypes import PhenotypeReader
from modalities.splits import draw_split, load_or_draw_split
from modalities.variants import VARIANT_COLUMNS, VariantReader

MODALITIES = ("phenotypes", "variants", "imaging", "labs")
LABELS = {"a1": "OMIM:1", "a2": "OMIM:1", "a3": "OMIM:1", "a4": "OMIM:1", "a5": "OMIM:1",
          "b1": "OMIM:2", "b2": "OMIM:2", "c1": "OMIM:3"}
VCF = """##fileformat=VCFv4.2
##INFO=<ID=GENE,Number=1,Type=String,Description="g">
##INFO=<ID=CSQ,Number=1,Type=String,Description="c">
##INFO=<ID=IMPACT,Number=1,Type=String,Description="i">
##INFO=<ID=AF,Number=A,Type=Float,Description="af">
##FORMAT=<ID=GT,Number=1,Type=String,Description="gt">
#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS1
""" + "".join(f"chr1\t{p}\t.\tA\tG\t.\tPASS\tGENE=FBN1;CSQ=missense_variant;IMPACT=HIGH;AF=0.01\tGT\t0/1\n" for p in (1, 2))


@pytest.fixture
def site(tmp_path, write_phenopacket):
    for pid, label in LABELS.items():
        observed = () if pid == "c1" else ("HP:0001250",)
        write_phenopacket(tmp_path / "phenopackets", pid, observed=observed, label=label)
    (tmp_path / "vcf").mkdir()
    for pid in ("a1", "b1"):
        (tmp_path / "vcf" / f"{pid}.vcf").write_text(VCF)
    (tmp_path / "images").mkdir()
    Image.fromarray(np.full((10, 10), 200, np.uint8)).save(tmp_path / "images" / "a2.png")
    (tmp_path / "labs.csv").write_text("patient_id,analyte,value,unit\na1,glucose,5,mmol/L\nb2,lactate,1,mmol/L\n")
    return tmp_path


@pytest.fixture
def readers():
    return {
        "phenotypes": PhenotypeReader(),
        "variants": VariantReader(score_fields=()),
        "imaging": ImageReader(spatial_size=(8, 8)),
        "labs": LabReader(),
    }


def all_items(datasets):
    return {item["patient_id"]: item for ds in datasets.values() for item in ds}


def test_load_site_items(site, readers):
    space = LabelSpace(set(LABELS.values()) | {"OMIM:9"})

    datasets = load_site(site, MODALITIES, readers, space, seed=0)

    assert set(datasets) == {"train", "val", "test"}
    items = all_items(datasets)
    assert set(items) == set(LABELS)
    assert items["b1"]["label"] == space.index("OMIM:2")
    assert set(items["a1"]["inputs"]) == {"phenotypes", "variants", "labs"}
    assert set(items["a2"]["inputs"]) == {"phenotypes", "imaging"}
    assert set(items["c1"]["inputs"]) == set()  # no HPO terms: phenotypes not present
    assert items["a1"]["meta"] == {"sex": "FEMALE", "age_years": pytest.approx(3.5)}


def test_collate_with_partially_and_wholly_absent_modalities(site, readers):
    space = LabelSpace(LABELS.values())
    items = all_items(load_site(site, MODALITIES, readers, space, seed=0))
    collate = partial(collate_batch, modalities=MODALITIES, readers=readers)
    batch_items = [items["a1"], items["b2"], items["c1"]]

    batch = next(iter(DataLoader(batch_items, batch_size=3, collate_fn=collate)))

    assert batch["patient_id"] == ["a1", "b2", "c1"]
    assert batch["label"].tolist() == [space.index("OMIM:1"), space.index("OMIM:2"), space.index("OMIM:3")]
    assert batch["present"].tolist() == [[True, True, False, True], [True, False, False, True], [False, False, False, False]]
    assert "imaging" not in batch["inputs"]
    variants = batch["inputs"]["variants"]
    assert variants.shape == (3, 2, len(VARIANT_COLUMNS) - 4)  # no score fields configured
    assert variants[1:].abs().sum() == 0 and variants[0, :, 0].tolist() == [1, 1]
    assert batch["inputs"]["phenotypes"].shape == (3, 1) and batch["inputs"]["phenotypes"][2, 0] == 0
    assert batch["inputs"]["labs"].shape == (3, 12) and batch["inputs"]["labs"][2].abs().sum() == 0


def test_missing_label_and_label_outside_space(site, readers, write_phenopacket):
    write_phenopacket(site / "phenopackets", "x1", label=None)
    with pytest.raises(DataError) as err:
        load_site(site, MODALITIES, readers, LabelSpace(LABELS.values()), seed=0)
    assert err.value.record == "x1" and err.value.path.endswith("x1.json")

    write_phenopacket(site / "phenopackets", "x1", label="OMIM:404")
    with pytest.raises(DataError) as err:
        load_site(site, MODALITIES, readers, LabelSpace(LABELS.values()), seed=0)
    assert "OMIM:404" in str(err.value) and err.value.record == "x1"


def test_site_labels(site):
    assert site_labels(site) == set(LABELS.values())


def test_label_space():
    space = LabelSpace(["OMIM:3", "OMIM:1", "OMIM:2", "OMIM:1"])

    assert space.labels == ("OMIM:1", "OMIM:2", "OMIM:3") and len(space) == 3
    assert space.index("OMIM:2") == 1
    with pytest.raises(KeyError, match="OMIM:7"):
        space.index("OMIM:7")


def test_drawn_split_is_seeded_and_stratified(site):
    records = read_cohort(site / "phenopackets")

    first = load_or_draw_split(site, records, seed=1)
    again = load_or_draw_split(site, records, seed=1)
    others = [draw_split(records, seed, {"train": 0.6, "val": 0.2, "test": 0.2}) for seed in range(2, 12)]

    assert first == again
    assert any(o != first for o in others)
    for split in [first, *others]:
        assert sorted(pid for ids in split.values() for pid in ids) == sorted(LABELS)
        train_labels = Counter(LABELS[pid] for pid in split["train"])
        assert train_labels["OMIM:1"] == 3 and train_labels["OMIM:2"] >= 1 and train_labels["OMIM:3"] == 1


def test_split_from_file(site, readers):
    rows = {pid: ("test" if pid in ("a1", "b1") else "val" if pid == "a2" else "train") for pid in LABELS}
    (site / "split.csv").write_text("patient_id,split\n" + "".join(f"{p},{s}\n" for p, s in rows.items()))

    datasets = load_site(site, ["phenotypes"], readers, LabelSpace(LABELS.values()), seed=0)

    assert sorted(datasets["test"].patient_ids) == ["a1", "b1"]
    assert datasets["val"].patient_ids == ["a2"]
    assert len(datasets["train"]) == len(LABELS) - 3


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda text: text + "zz9,train\n", "patient_id"),
        (lambda text: text.replace("a1,train", "a1,holdout"), "split"),
        (lambda text: text.replace("a1,train\n", ""), "patient_id"),
    ],
)
def test_bad_split_file(site, edit, field):
    text = "patient_id,split\n" + "".join(f"{pid},train\n" for pid in LABELS)
    (site / "split.csv").write_text(edit(text))

    with pytest.raises(DataError) as err:
        load_or_draw_split(site, read_cohort(site / "phenopackets"), seed=0)

    assert err.value.path.endswith("split.csv") and err.value.field == field
