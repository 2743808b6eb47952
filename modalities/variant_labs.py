"""Which lab holds which variant, and which genes no lab trains on.

Diagnostic labs differ by the genes they test (a cardiac panel, a cancer panel),
so a variant table is cut into labs by whole genes or whole chromosomes, in the
unequal shares of `data.labs.shares`, or by a column that names each row's lab
(e.g. the ClinVar submitter).

Evaluation is on held-out genes: a test gene's rows are test rows at every lab
that has them, so no lab ever trains on that gene. A model that memorised genes
would look good on a random split of rows and fail on the next family's new
gene. Each gene is dealt at its home lab (the lab with most of its rows), so
every lab keeps about the configured share of test and calibration rows.
"""
from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from modalities.base import check_option

LAB_SCHEMES = ("gene", "chromosome", "column")
HOLDOUT_SPLITS = ("test", "val", "train")  # val: the held-out genes the calibrator is fitted on


def deal_groups(groups: Sequence[str], shares: Sequence[float], seed: int, what: str = "groups") -> list[int]:
    """Whole groups to bins in proportion to `shares` of the rows: in a seeded order, each group goes to the
    bin furthest below its share. Returns the bin of every row; every bin with a positive share gets a group."""
    shares = np.asarray(shares, dtype=np.float64)
    if shares.ndim != 1 or not len(shares) or (shares < 0).any() or shares.sum() <= 0:
        raise ValueError(f"shares must be non-negative with a positive sum, got {shares.tolist()}")
    sizes = Counter(groups)
    names = sorted(sizes)
    needed = int((shares > 0).sum())
    if len(names) < needed:
        raise ValueError(f"{len(names)} {what} cannot fill {needed} parts (each of the {what} goes wholly to one)")
    rng = np.random.default_rng([seed, zlib.crc32(what.encode())])
    target = shares / shares.sum() * len(groups)
    load = np.zeros(len(shares))
    bin_of: dict[str, int] = {}
    for name in (names[i] for i in rng.permutation(len(names))):
        empty = [b for b in range(len(shares)) if shares[b] > 0 and load[b] == 0]
        # first give every bin one group, then fill by deficit
        deficit = np.where(shares > 0, target - load, -np.inf)
        b = empty[0] if len(names) - len(bin_of) <= len(empty) else int(np.argmax(deficit))
        bin_of[name] = b
        load[b] += sizes[name]
    return [bin_of[g] for g in groups]


def assign_labs(genes: Sequence[str], chroms: Sequence[str] | None, lab_column: Sequence[str] | None, labs: Mapping[str, Any], seed: int) -> tuple[list[str], list[str]]:
    """(lab of every row, lab names) as `data.labs` says: `by` gene | chromosome | column."""
    by = check_option("data.labs.by", str(labs.get("by", "gene")), LAB_SCHEMES)
    if by == "column":
        if lab_column is None:
            raise ValueError("data.labs.by is 'column' but data.labs.column names no column")
        return list(lab_column), sorted(set(lab_column))
    shares = list(labs.get("shares") or [])
    if not shares:
        raise ValueError(f"data.labs.by is {by!r}: set data.labs.shares (one share of the rows per lab)")
    names = [str(n) for n in labs.get("names") or [f"lab_{i + 1}" for i in range(len(shares))]]
    if len(names) != len(shares):
        raise ValueError(f"data.labs.names has {len(names)} names for {len(shares)} shares")
    if by == "chromosome" and chroms is None:
        raise ValueError("data.labs.by is 'chromosome' but data.columns.chrom is not set")
    groups = genes if by == "gene" else chroms
    bins = deal_groups(list(groups), shares, seed, what="genes" if by == "gene" else "chromosomes")
    return [names[b] for b in bins], names


def holdout_split(genes: Sequence[str], labs: Sequence[str], shares: Mapping[str, float], seed: int) -> list[str]:
    """"test", "val" or "train" for every row, by whole genes, dealt within each gene's home lab."""
    fractions = [float(shares.get("test", 0.2)), float(shares.get("val", 0.1))]
    if min(fractions) < 0 or sum(fractions) >= 1:
        raise ValueError(f"data.holdout test + val must be in [0, 1), got {fractions}")
    parts = fractions + [1.0 - sum(fractions)]
    home = _home_labs(genes, labs)
    split_of_gene: dict[str, str] = {}
    for lab in sorted(set(home.values())):
        at_lab = [g for g in genes if home[g] == lab]
        active = [p if len(set(at_lab)) >= 3 else (0.0 if i < 2 else 1.0) for i, p in enumerate(parts)]
        for gene, b in zip(at_lab, deal_groups(at_lab, active, seed + zlib.crc32(lab.encode()), what="genes")):
            split_of_gene[gene] = HOLDOUT_SPLITS[b]
    return [split_of_gene[g] for g in genes]


def _home_labs(genes: Sequence[str], labs: Sequence[str]) -> dict[str, str]:
    counts = Counter(zip(genes, labs))
    home: dict[str, tuple[int, str]] = {}
    for (gene, lab), n in counts.items():
        best = home.get(gene)
        if best is None or (n, best[1]) > (best[0], lab):  # most rows; ties to the first lab by name
            home[gene] = (n, lab)
    return {gene: lab for gene, (_, lab) in home.items()}
