"""What every site of one consortium shares: the diseases and everything fixed per disease.

Real sites see the same diseases with the same features, genes, lab signatures and
imaging signs; only their patients differ. Building this once, from streams named
after each disease, keeps it identical for every site and independent of them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.random import SeedSequence

from modalities.annotations import load_annotations
from modalities.hpo import load_hpo_index
from modalities.synthetic.diseases import Disease, choose_diseases
from modalities.synthetic.image_writer import disease_pattern
from modalities.synthetic.labs_writer import disease_shifts
from modalities.synthetic.phenotypes import TermSpace, build_term_space
from modalities.synthetic.seeds import generator
from modalities.synthetic.spec import ConsortiumSpec
from modalities.synthetic.variants import Genome, build_genome


@dataclass(frozen=True)
class World:
    spec: ConsortiumSpec
    diseases: tuple[Disease, ...]
    space: TermSpace
    genome: Genome
    lab_shifts: dict[str, dict[str, float]]  # disease id -> analyte -> shift in reference widths
    patterns: dict[tuple[str, int], np.ndarray]  # (disease id, image dims) -> image pattern
    versions: dict[str, str]  # resource versions for phenopacket metadata

    def image_size(self, dims: int) -> int:
        return self.spec.image_size_2d if dims == 2 else self.spec.image_size_3d


def build_world(spec: ConsortiumSpec, seq: SeedSequence) -> World:
    annotations, index = load_annotations(), load_hpo_index()
    diseases = choose_diseases(
        annotations, index, generator(seq, "diseases"),
        spec.n_diseases, spec.min_terms, spec.root_term, spec.min_root_fraction,
    )  # fmt: skip
    sizes = {2: spec.image_size_2d, 3: spec.image_size_3d}
    return World(
        spec=spec,
        diseases=diseases,
        space=build_term_space(index, annotations, diseases),
        genome=build_genome(index.gene_symbols, diseases, generator(seq, "genome"), spec.score_missing_rate),
        lab_shifts={d.id: disease_shifts(spec.analytes, generator(seq, "labs", d.id), spec.lab_shift_widths) for d in diseases},
        patterns={
            (d.id, dims): disease_pattern(generator(seq, "imaging", d.id, dims), dims, size)
            for d in diseases
            for dims, size in sizes.items()
        },
        versions={"hp": annotations.hpo_version.rsplit("/", 1)[-1], "omim": annotations.hpoa_version},
    )
