"""HPO annotation frequencies as probabilities.

phenotype.hpoa writes a term's frequency three ways: an HPO frequency term
(HP:0040280-HP:0040285), a count of patients ("3/7") or a percentage ("25%").
The values for the frequency terms are the midpoints of the ranges the HPO
defines for them (e.g. "Frequent" is 30-79%).
"""
from __future__ import annotations

FREQUENCY_TERMS: dict[str, float] = {
    "HP:0040280": 1.0,  # Obligate
    "HP:0040281": 0.9,  # Very frequent (80-99%)
    "HP:0040282": 0.55,  # Frequent (30-79%)
    "HP:0040283": 0.17,  # Occasional (5-29%)
    "HP:0040284": 0.025,  # Very rare (1-4%)
    "HP:0040285": 0.0,  # Excluded
}
UNKNOWN_FREQUENCY = 0.5


def frequency_to_probability(text: str | None) -> float:
    """Probability that a patient with the disease shows the term; 0.5 when the annotation says nothing."""
    text = (text or "").strip()
    if not text:
        return UNKNOWN_FREQUENCY
    if text in FREQUENCY_TERMS:
        return FREQUENCY_TERMS[text]
    try:
        if text.endswith("%"):
            return _clip(float(text[:-1]) / 100.0)
        if "/" in text:
            numerator, denominator = (float(part) for part in text.split("/", 1))
            return _clip(numerator / denominator) if denominator > 0 else UNKNOWN_FREQUENCY
    except ValueError:
        pass
    return UNKNOWN_FREQUENCY


def _clip(p: float) -> float:
    return min(max(p, 0.0), 1.0)
