"""Consequence mixes of background variants: (VEP consequence, impact, share) per kind of variant.

A patient's candidate variants are mostly background: common variants, rare benign
ones and, for a disease gene, damaging ones. The synthetic generator draws its
variants from these mixes, and the phenopacket-store loader draws the background
candidates it places around a patient's own vcfRecords from the same ones, so the
two kinds of cohort present the variant model with the same background.
"""
from __future__ import annotations

COMMON_CONSEQUENCES = (
    ("intron_variant", "MODIFIER", 0.45), ("synonymous_variant", "LOW", 0.15),
    ("upstream_gene_variant", "MODIFIER", 0.1), ("3_prime_UTR_variant", "MODIFIER", 0.1),
    ("missense_variant", "MODERATE", 0.15), ("splice_region_variant", "LOW", 0.05),
)  # fmt: skip
BENIGN_CONSEQUENCES = (
    ("intron_variant", "MODIFIER", 0.35), ("synonymous_variant", "LOW", 0.25),
    ("5_prime_UTR_variant", "MODIFIER", 0.1), ("3_prime_UTR_variant", "MODIFIER", 0.1),
    ("splice_region_variant", "LOW", 0.1), ("downstream_gene_variant", "MODIFIER", 0.1),
)  # fmt: skip
DAMAGING_CONSEQUENCES = (
    ("missense_variant", "MODERATE", 0.5), ("stop_gained", "HIGH", 0.15), ("frameshift_variant", "HIGH", 0.15),
    ("splice_donor_variant", "HIGH", 0.05), ("splice_acceptor_variant", "HIGH", 0.05),
    ("inframe_deletion", "MODERATE", 0.05), ("start_lost", "HIGH", 0.05),
)  # fmt: skip
