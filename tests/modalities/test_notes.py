import pytest
import torch

from modalities.base import DataError
from modalities.notes import NoteReader
from modalities.phenopacket_io import read_cohort


@pytest.fixture(scope="module")
def reader():
    return NoteReader(max_length=16)


@pytest.fixture
def site(tmp_path, write_phenopacket):
    for pid in ("p1", "p2", "p3"):
        write_phenopacket(tmp_path / "phenopackets", pid)
    (tmp_path / "notes").mkdir()
    return tmp_path


def test_token_ids_decode_to_the_note(site, reader):
    text = "the child has seizures and delayed speech since infancy"
    (site / "notes" / "p1.txt").write_text(text)

    out = reader.read_site(site, read_cohort(site / "phenopackets"))

    ids = out["p1"]
    assert ids.dtype == torch.long and ids.ndim == 1
    assert ids[0] == reader.tokenizer.cls_token_id and ids[-1] == reader.tokenizer.sep_token_id
    assert reader.tokenizer.decode(ids, skip_special_tokens=True).split() == text.split()


def test_truncation_padding_and_ignored_files(site, reader):
    (site / "notes" / "p1.txt").write_text("word " * 100)
    (site / "notes" / "p2.txt").write_text("short note")
    (site / "notes" / "p3.txt").write_text("   \n")
    (site / "notes" / "stranger.txt").write_text("not one of ours")

    out = reader.read_site(site, read_cohort(site / "phenopackets"))
    batch = reader.collate([out["p1"], out["p2"]])

    assert set(out) == {"p1", "p2"}
    assert out["p1"].shape == (16,)
    assert batch.shape == (2, 16)
    assert (batch[1, out["p2"].shape[0]:] == reader.pad_token_id).all()
    assert reader.stats["files_without_phenopacket"] == 1 and reader.stats["empty_notes"] == 1


def test_note_that_is_not_utf8(site, reader):
    (site / "notes" / "p1.txt").write_bytes(b"caf\xe9 au lait")

    with pytest.raises(DataError) as err:
        reader.read_site(site, read_cohort(site / "phenopackets"))

    assert err.value.path.endswith("p1.txt") and err.value.record == "p1" and err.value.field == "text"
