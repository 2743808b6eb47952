"""The consortium's label space: every site maps its diagnoses to the same class indices."""
from __future__ import annotations

from collections.abc import Iterable


class UnknownLabelError(KeyError):
    """A diagnosis that is not in the agreed label space."""

    def __str__(self) -> str:  # KeyError would show the message with quotes around it
        return str(self.args[0])


class LabelSpace:
    """Sorted, de-duplicated labels (e.g. OMIM ids); the index is the class id the models predict."""

    def __init__(self, labels: Iterable[str]):
        self._labels: tuple[str, ...] = tuple(sorted(set(labels)))
        if not self._labels:
            raise ValueError("a label space needs at least one label")
        self._index = {label: i for i, label in enumerate(self._labels)}

    @property
    def labels(self) -> tuple[str, ...]:
        return self._labels

    def index(self, label: str) -> int:
        try:
            return self._index[label]
        except KeyError:
            raise UnknownLabelError(
                f"label {label!r} is not in the label space ({len(self)} labels, e.g. {', '.join(self._labels[:3])})"
            ) from None

    def __contains__(self, label: object) -> bool:
        return label in self._index

    def __len__(self) -> int:
        return len(self._labels)

    def __iter__(self):
        return iter(self._labels)

    def __repr__(self) -> str:
        return f"LabelSpace({len(self)} labels)"
