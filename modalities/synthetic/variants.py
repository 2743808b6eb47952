"""A patient's variant calls: ancestry-specific common variants, rare benign ones, and the causal variant.

What makes variant prioritisation hard in real exomes is reproduced on purpose:
common variants whose frequencies differ by ancestry (so a site's background looks
different from another's), rare but harmless variants, sometimes in the very genes
of the diseases being told apart, and a causal variant that is rare, damaging and
scored as such, except when it was not found at all or a score is missing.

Gene positions are invented (the HPO files carry no coordinates): each gene gets a
stable locus from a digest of its symbol, on chrX when one of the consortium's
X-linked diseases involves it.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import numpy as np

from modalities.consequence_mix import BENIGN_CONSEQUENCES, COMMON_CONSEQUENCES, DAMAGING_CONSEQUENCES
from modalities.synthetic.diseases import RECESSIVE, Disease
from modalities.synthetic.spec import ANCESTRIES

GRCH38_LENGTHS: dict[str, int] = {
    "chr1": 248956422, "chr2": 242193529, "chr3": 198295559, "chr4": 190214555, "chr5": 181538259,
    "chr6": 170805979, "chr7": 159345973, "chr8": 145138636, "chr9": 138394717, "chr10": 133797422,
    "chr11": 135086622, "chr12": 133275309, "chr13": 114364328, "chr14": 107043718, "chr15": 101991189,
    "chr16": 90338345, "chr17": 83257441, "chr18": 80373285, "chr19": 58617616, "chr20": 64444167,
    "chr21": 46709983, "chr22": 50818468, "chrX": 156040895,
}  # fmt: skip
AUTOSOMES = tuple(c for c in GRCH38_LENGTHS if c != "chrX")
GENE_SPAN = 100_000
CATALOGUE_SIZE = 1500
MIN_POOL_AF = 0.02  # a variant belongs to an ancestry's common pool from this frequency on
POPULATION_SPECIFIC_FRACTION = 0.3

# (SO consequence, impact, relative weight)
BASES = "ACGT"


@dataclass(frozen=True)
class Variant:
    chrom: str
    pos: int
    id: str
    ref: str
    alt: str
    gene: str
    csq: str
    impact: str
    af: float | None
    cadd: float | None
    revel: float | None
    genotype: str = "0/1"


@dataclass(frozen=True)
class Genome:
    """The consortium's shared genetic background: gene loci and the common-variant catalogue."""

    all_genes: tuple[str, ...]
    disease_genes: tuple[str, ...]
    x_genes: frozenset[str]
    catalogue: tuple[Variant, ...]  # af left empty; see frequencies
    frequencies: np.ndarray  # (len(catalogue), len(ANCESTRIES)) allele frequency per population

    def locus(self, gene: str) -> tuple[str, int]:
        return gene_locus(gene, gene in self.x_genes)

    def pool(self, ancestry: str) -> np.ndarray:
        return np.flatnonzero(self.frequencies[:, ANCESTRIES.index(ancestry)] >= MIN_POOL_AF)


def gene_locus(gene: str, x_linked: bool) -> tuple[str, int]:
    """A stable (chromosome, start) for a gene symbol."""
    digest = int.from_bytes(hashlib.sha256(gene.encode()).digest()[:8], "little")
    chrom = "chrX" if x_linked else AUTOSOMES[digest % len(AUTOSOMES)]
    return chrom, 1_000_000 + (digest >> 8) % (GRCH38_LENGTHS[chrom] - 3_000_000)


def build_genome(
    all_genes: tuple[str, ...], diseases: tuple[Disease, ...], rng: np.random.Generator, score_missing: float
) -> Genome:
    disease_genes = tuple(sorted({g for d in diseases for g in d.genes}))
    x_genes = frozenset(g for d in diseases if d.inheritance == "x_linked" for g in d.genes)
    genes = tuple(sorted(set(all_genes) | set(disease_genes)))
    catalogue = _catalogue(genes, x_genes, rng, score_missing)
    return Genome(genes, disease_genes, x_genes, catalogue, _population_frequencies(len(catalogue), rng))


def sample_variants(
    genome: Genome, ancestry: str, disease: Disease, causative_gene: str | None,
    counts: dict[str, tuple[int, int]], score_missing: float, rng: np.random.Generator,
) -> list[Variant]:  # fmt: skip
    """``counts`` holds the [lo, hi] ranges 'background_variants' and 'rare_benign_variants'."""
    calls = _common(genome, ancestry, _draw(rng, counts["background_variants"]), rng)
    taken = {(v.chrom, v.pos) for v in calls}
    for _ in range(_draw(rng, counts["rare_benign_variants"])):
        calls.append(_rare_benign(genome, rng, score_missing, taken))
    if causative_gene is not None:
        calls += _causative(genome, disease, causative_gene, rng, score_missing, taken)
    return calls


def _catalogue(
    genes: tuple[str, ...], x_genes: frozenset[str], rng: np.random.Generator, score_missing: float
) -> tuple[Variant, ...]:
    taken: set[tuple[str, int]] = set()
    variants = []
    for gene in rng.choice(genes, size=CATALOGUE_SIZE):
        csq, impact = _consequence(COMMON_CONSEQUENCES, rng)
        chrom, pos = _position(gene_locus(str(gene), gene in x_genes), rng, taken)
        ref, alt = _alleles(csq, rng)
        cadd, revel = _scores(rng, (10, 25) if impact == "MODERATE" else (0, 12), (0.05, 0.5), score_missing)
        rsid = f"rs{int(rng.integers(10**6, 10**9))}"
        variants.append(Variant(chrom, pos, rsid, ref, alt, str(gene), csq, impact, None, cadd, revel))
    return tuple(variants)


def _population_frequencies(n: int, rng: np.random.Generator) -> np.ndarray:
    """A shared frequency per variant, perturbed per population; some variants common in one population only."""
    base = 10 ** rng.uniform(np.log10(0.03), np.log10(0.5), size=n)
    frequencies = np.clip(base[:, None] * np.exp(rng.normal(0, 0.7, size=(n, len(ANCESTRIES)))), 0.001, 0.95)
    specific = np.flatnonzero(rng.random(n) < POPULATION_SPECIFIC_FRACTION)
    owners = rng.integers(len(ANCESTRIES), size=len(specific))
    rare = rng.uniform(0.0002, 0.005, size=(len(specific), len(ANCESTRIES)))
    rare[np.arange(len(specific)), owners] = frequencies[specific, owners]
    frequencies[specific] = rare
    return np.round(frequencies, 4)


def _common(genome: Genome, ancestry: str, n: int, rng: np.random.Generator) -> list[Variant]:
    pool = genome.pool(ancestry)
    af = genome.frequencies[pool, ANCESTRIES.index(ancestry)]
    picked = rng.choice(len(pool), size=min(n, len(pool)), replace=False, p=af / af.sum())
    calls = []
    for i in sorted(picked.tolist()):
        p = float(af[i])
        genotype = "1/1" if rng.random() < p / (2 - p) else "0/1"  # Hardy-Weinberg, given a carrier
        calls.append(replace(genome.catalogue[pool[i]], af=p, genotype=genotype))
    return calls


def _rare_benign(genome: Genome, rng: np.random.Generator, score_missing: float, taken: set) -> Variant:
    # Half fall in the consortium's disease genes: a rare variant in the right gene is not enough.
    genes = genome.disease_genes if rng.random() < 0.5 else genome.all_genes
    gene = str(genes[int(rng.integers(len(genes)))])
    csq, impact = _consequence(BENIGN_CONSEQUENCES, rng)
    chrom, pos = _position(genome.locus(gene), rng, taken)
    ref, alt = _alleles(csq, rng)
    cadd, revel = _scores(rng, (0, 12), (0.0, 0.3), score_missing)
    return Variant(chrom, pos, ".", ref, alt, gene, csq, impact, _rare_af(rng, 1e-5, 1e-3), cadd, revel)


def _causative(
    genome: Genome, disease: Disease, gene: str, rng: np.random.Generator, score_missing: float, taken: set
) -> list[Variant]:
    """One heterozygous variant, or for recessive diseases a homozygous one or two compound heterozygous."""
    compound = disease.inheritance == RECESSIVE and rng.random() < 0.5
    n_alleles = 2 if compound else 1
    genotype = "1/1" if disease.inheritance == RECESSIVE and not compound else "0/1"
    calls = []
    for _ in range(n_alleles):
        csq, impact = _consequence(DAMAGING_CONSEQUENCES, rng)
        chrom, pos = _position(genome.locus(gene), rng, taken)
        ref, alt = _alleles(csq, rng)
        cadd, revel = _scores(rng, (25, 35), (0.6, 0.95), score_missing)
        af = _rare_af(rng, 1e-6, 9e-5)
        calls.append(Variant(chrom, pos, ".", ref, alt, gene, csq, impact, af, cadd, revel, genotype))
    return calls


def _consequence(table: tuple[tuple[str, str, float], ...], rng: np.random.Generator) -> tuple[str, str]:
    weights = np.array([w for *_, w in table])
    csq, impact, _ = table[int(rng.choice(len(table), p=weights / weights.sum()))]
    return csq, impact


def _position(locus: tuple[str, int], rng: np.random.Generator, taken: set) -> tuple[str, int]:
    chrom, start = locus
    pos = start + int(rng.integers(GENE_SPAN))
    while (chrom, pos) in taken:
        pos += 1
    taken.add((chrom, pos))
    return chrom, pos


def _alleles(csq: str, rng: np.random.Generator) -> tuple[str, str]:
    """REF/ALT whose shape fits the consequence: indels for frameshift and in-frame changes, SNVs otherwise."""
    ref = BASES[int(rng.integers(4))]
    if csq == "frameshift_variant":
        return ref, ref + BASES[int(rng.integers(4))]
    if csq == "inframe_deletion":
        return ref + "".join(BASES[i] for i in rng.integers(4, size=3)), ref
    alt = BASES[(BASES.index(ref) + int(rng.integers(1, 4))) % 4]
    return ref, alt


def _scores(
    rng: np.random.Generator, cadd: tuple[float, float], revel: tuple[float, float], missing: float
) -> tuple[float | None, float | None]:
    c = round(float(rng.uniform(*cadd)), 1)
    r = round(float(rng.uniform(*revel)), 3)
    return (None if rng.random() < missing else c), (None if rng.random() < missing else r)


def _rare_af(rng: np.random.Generator, lo: float, hi: float) -> float | None:
    """Absent from the population database half the time, otherwise log-uniform in [lo, hi]."""
    if rng.random() < 0.5:
        return None
    return float(f"{10 ** rng.uniform(np.log10(lo), np.log10(hi)):.2e}")


def _draw(rng: np.random.Generator, bounds: tuple[int, int]) -> int:
    return int(rng.integers(bounds[0], bounds[1] + 1))
