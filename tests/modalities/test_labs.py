import pytest
import torch

from modalities.base import DataError
from modalities.labs import LabReader
from modalities.phenopacket_io import read_cohort

GLUCOSE_MOLAR_MASS = 180.16  # g/mol, as in conf/analytes/default.yaml


@pytest.fixture
def site(tmp_path, write_phenopacket):
    for pid in ("p1", "p2", "p3"):
        write_phenopacket(tmp_path / "phenopackets", pid)
    return tmp_path


def read(site, rows, **kwargs):
    text = "patient_id,analyte,value,unit\n" + "".join(",".join(map(str, r)) + "\n" for r in rows)
    (site / "labs.csv").write_text(text)
    reader = LabReader(**kwargs)
    return reader, reader.read_site(site, read_cohort(site / "phenopackets"))


def test_mass_and_substance_units_give_the_same_value(site):
    mmol_per_l = 90.0 / GLUCOSE_MOLAR_MASS * 10  # 90 mg/dL = 900 mg/L
    reader, out = read(site, [("p1", "glucose", 90, "mg/dL"), ("p2", "glucose", mmol_per_l, "mmol/L")])

    glucose = reader.analyte_names.index("glucose")
    assert out["p1"][glucose] == pytest.approx(out["p2"][glucose].item(), abs=1e-5)
    assert out["p1"][glucose] == pytest.approx((mmol_per_l - 4.75) / 0.85, abs=1e-5)


def test_layout_missing_indicators_and_enzyme_units(site):
    reader, out = read(site, [("p1", "creatine_kinase", 2, "ukat/L"), ("p2", "Creatine_Kinase", 120, "U/L")])

    n = len(reader.analytes)
    ck = reader.analyte_names.index("creatine_kinase")
    assert out["p1"].dtype == torch.float32 and out["p1"].shape == (2 * n,)
    assert out["p1"][ck] == pytest.approx((120 - 115) / 85)  # 2 ukat/L = 120 U/L
    assert out["p1"][ck] == pytest.approx(out["p2"][ck].item())
    missing = out["p1"][n:]
    assert missing[ck] == 0 and missing.sum() == n - 1
    assert out["p1"][:n].abs().sum() == pytest.approx(abs(out["p1"][ck].item()))
    assert "p3" not in out
    assert reader.collate([out["p1"], out["p2"]]).shape == (2, 2 * n)


def test_duplicates_are_averaged_and_unknown_analytes_ignored(site):
    analytes = {"lactate": {"unit": "mmol/L", "low": 0.5, "high": 2.5}}
    rows = [("p1", "lactate", 1.0, "mmol/L"), ("p1", "lactate", 3.0, "mmol/L"), ("p1", "sodium", 140, "mmol/L")]
    reader, out = read(site, rows, analytes=analytes)

    assert out["p1"].tolist() == pytest.approx([(2.0 - 1.5) / 1.0, 0.0])
    assert reader.stats["duplicate_rows_averaged"] == 1 and reader.stats["unknown_analyte_rows"] == 1

    with pytest.raises(DataError) as err:
        read(site, rows, analytes=analytes, unknown_analytes="error")
    assert err.value.field == "analyte" and err.value.record == "row 4 (p1)"


def test_rows_of_patients_without_phenopacket_are_ignored(site):
    reader, out = read(site, [("stranger", "glucose", 5, "mmol/L")])

    assert out == {} and reader.stats["rows_without_phenopacket"] == 1


@pytest.mark.parametrize(
    "row, field",
    [
        (("p2", "glucose", 5.1, "mmol/furlong"), "unit"),
        (("p2", "glucose", "high", "mmol/L"), "value"),
        (("p2", "creatine_kinase", 100, "mg/dL"), "unit"),
        (("p2", "glucose", 5.1, ""), "unit"),
    ],
)
def test_bad_rows_name_file_row_patient_and_field(site, row, field):
    with pytest.raises(DataError) as err:
        read(site, [("p1", "glucose", 5.0, "mmol/L"), row])

    assert err.value.path.endswith("labs.csv")
    assert err.value.record == "row 3 (p2)"
    assert err.value.field == field


def test_missing_column(site):
    (site / "labs.csv").write_text("patient_id,analyte,value\np1,glucose,5\n")

    with pytest.raises(DataError) as err:
        LabReader().read_site(site, read_cohort(site / "phenopackets"))

    assert err.value.field == "unit"


@pytest.mark.parametrize("value, says", [("high", "not a number"), ("<0.5", "a bound"), ("Infinity", "not a finite number")])
def test_a_bad_value_is_located_but_never_quoted(site, value, says):
    with pytest.raises(DataError) as err:
        read(site, [("p1", "glucose", value, "mmol/L")])

    assert err.value.field == "value" and err.value.record == "row 2 (p1)"
    assert says in str(err.value) and value not in str(err.value)
