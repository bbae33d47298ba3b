"""The ``class_descriptions`` subset read back as the mapping HNF's text branch takes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence


def class_descriptions_by_class(rows: Iterable[Mapping], label_names: Sequence[str]) -> tuple[dict[str, list[str]], str]:
    """Group rows of a ``class_descriptions`` subset (label, description, source, ...) by class.

    ``label`` may be the class index or its name. Returns ``{class name: [texts]}`` for every class in
    ``label_names`` (the ``class_descriptions`` that ``HNFConfig`` takes; classes may hold different numbers
    of texts) and the sources joined with ``+`` in first-seen order. A label outside ``label_names``, an
    empty description or a class without any description is an error naming the row or the class.
    """
    descriptions: dict[str, list[str]] = {name: [] for name in label_names}
    sources: list[str] = []
    for position, row in enumerate(rows):
        label = row["label"]
        name = label_names[label] if isinstance(label, int) else label
        if name not in descriptions:
            raise ValueError(f"class_descriptions row {position}: label {label!r} is not one of {list(label_names)}")
        text = (row.get("description") or "").strip()
        if not text:
            raise ValueError(f"class_descriptions row {position} ({name}): empty description")
        descriptions[name].append(text)
        if row.get("source") and row["source"] not in sources:
            sources.append(row["source"])
    missing = [name for name, texts in descriptions.items() if not texts]
    if missing:
        raise ValueError(f"class_descriptions: no description for {missing}")
    return descriptions, "+".join(sources)
