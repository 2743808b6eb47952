"""A free-text clinic note per patient, as a note encoder would meet it.

Findings are named by their HPO label or one of its synonyms, absent findings are
negated in several ways (a bag of words that ignores negation confuses "no seizures"
with seizures), and sentences about family history, unrelated complaints and
administration dilute the signal. The note never names the diagnosis.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from modalities.synthetic.patients import Patient
from modalities.synthetic.phenotypes import TermSpace

OPENINGS = (
    "{Age} {person} seen in the genetics clinic for evaluation of a suspected inherited condition.",
    "Referral: {age} {person} assessed for a possible rare disease.",
    "This {age} {person} was referred by the primary care physician for further work-up.",
    "{Age} {person} presenting for a multidisciplinary review.",
)
FINDINGS = (
    "On examination {they} had {findings}.",
    "History is notable for {findings}.",
    "{They_cap} presents with {findings}.",
    "Findings include {findings}.",
    "Notable features: {findings}.",
    "The referring letter mentions {findings}.",
)
PARENT_FINDINGS = ("Parents report {findings}.", "The mother describes {findings}.")
NEGATIONS = (
    "No {x}.",
    "{They_cap} denies {x}.",
    "{X} was not observed.",
    "There is no evidence of {x}.",
    "Negative for {x}.",
    "{X} has been ruled out.",
)
FAMILY = (
    "Family history is unremarkable.",
    "Parents are non-consanguineous.",
    "A maternal uncle has type 2 diabetes.",
    "Paternal grandfather had hypertension.",
    "One older sibling is healthy.",
    "Family history is notable for migraine on the father's side.",
)
UNRELATED = (
    "Seasonal allergies are noted.",
    "Immunisations are up to date.",
    "A fractured wrist after a fall two years ago healed without complications.",
    "Occasional heartburn, managed with antacids.",
    "Vision screening was normal last year.",
)
ADMIN = (
    "Consent for genetic testing was obtained.",
    "Follow-up in three months.",
    "Interpreter not required.",
    "Letter copied to the referring physician.",
    "Blood samples sent to the laboratory.",
    "Next appointment to be booked by the clinic secretary.",
)


def write_note(path: Path, patient: Patient, space: TermSpace, rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_note(patient, space, rng) + "\n", encoding="utf-8")


def render_note(patient: Patient, space: TermSpace, rng: np.random.Generator) -> str:
    words = _words(patient)
    observed = [_term_text(t, space, rng) for t in patient.phenotypes.observed]
    body = [_findings(chunk, patient, words, rng) for chunk in _chunks(observed, rng)]
    body += [_negation(_term_text(t, space, rng), words, rng) for t in patient.phenotypes.excluded]
    body += [_pick(FAMILY, rng), *_sample(UNRELATED, int(rng.integers(0, 3)), rng)]
    body = [body[i] for i in rng.permutation(len(body))]
    opening = _pick(OPENINGS, rng).format(**words)
    return " ".join([opening, *body, *_sample(ADMIN, int(rng.integers(1, 3)), rng)])


def _words(patient: Patient) -> dict[str, str]:
    years, female = patient.age_months // 12, patient.sex == "FEMALE"
    if years < 1:
        age, person = f"{patient.age_months}-month-old", "infant"
    elif years < 18:
        age, person = f"{years}-year-old", "girl" if female else "boy"
    else:
        age, person = f"{years}-year-old", "woman" if female else "man"
    they = "she" if female else "he"
    return {"age": age, "Age": _capital(age), "person": person, "they": they, "They_cap": _capital(they)}


def _findings(chunk: list[str], patient: Patient, words: dict[str, str], rng: np.random.Generator) -> str:
    templates = FINDINGS + (PARENT_FINDINGS if patient.age_months < 18 * 12 else ())
    return _pick(templates, rng).format(findings=_join(chunk), **words)


def _negation(text: str, words: dict[str, str], rng: np.random.Generator) -> str:
    return _pick(NEGATIONS, rng).format(x=text, X=_capital(text), **words)


def _term_text(term: str, space: TermSpace, rng: np.random.Generator) -> str:
    """The term's label, or a synonym 40% of the time, in running-text case."""
    position = space.position[term]
    options = (space.index.names[position], *space.index.synonyms[position])
    text = options[0] if len(options) == 1 or rng.random() < 0.6 else options[1 + int(rng.integers(len(options) - 1))]
    return _running_case(text)


def _running_case(text: str) -> str:
    # Lower-case the first letter unless the first word looks like an acronym (EEG, IgA).
    first = text.split(" ", 1)[0]
    return text if len(first) > 1 and any(c.isupper() or c.isdigit() for c in first[1:]) else text[:1].lower() + text[1:]


def _chunks(items: list[str], rng: np.random.Generator) -> list[list[str]]:
    chunks, start = [], 0
    while start < len(items):
        size = int(rng.integers(1, 4))
        chunks.append(items[start : start + size])
        start += size
    return chunks


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _pick(options: tuple[str, ...], rng: np.random.Generator) -> str:
    return options[int(rng.integers(len(options)))]


def _sample(options: tuple[str, ...], n: int, rng: np.random.Generator) -> list[str]:
    return [options[i] for i in sorted(rng.choice(len(options), size=n, replace=False).tolist())]


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]
