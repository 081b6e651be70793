"""Labels never invent classes silently.

The classes of a dataset given by list files come from its *training* list; what a list
holds that would add or shift a class is an error, naming file and line:

* an integer label outside the training list's range (``7`` in ``val.txt`` of a 4-class
  training list) -- checked by :func:`~datamodules.datasets.label_records`;
* a label that is not an integer among integer labels (it would become a class of its
  own and shift every index);
* a class name in the training list that occurs once and is one typo away from another
  class (``jumpng`` next to 40 ``jumping``): it would become a class and shift the others.

What does not change the classes but is probably not what the researcher meant is a
:class:`LabelWarning` (one line): the same video listed twice in a split, the same video
in the training set and in the validation or test set, an empty class folder.
"""

from __future__ import annotations

import difflib
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["LabelWarning", "check_label_kinds", "check_typos", "warn_split_overlaps"]


class LabelWarning(UserWarning):
    """A list or folder holds something that is probably a mistake (see the module)."""


def _is_int(s: str) -> bool:
    return s.lstrip("-").isdigit()


def check_label_kinds(entries: Sequence[tuple[str, str, int]], source: str) -> bool:
    """Whether the labels of ``entries`` (``(path, label, line)``) are integers.
    ``ValueError`` naming ``source`` and the line when integers and names are mixed."""
    ints = [e for e in entries if _is_int(e[1])]
    if not ints:
        return False
    names = [e for e in entries if not _is_int(e[1])]
    if names:
        _, label, line = names[0]
        raise ValueError(f"{source}:{line}: label {label!r} is not an integer, and "
                         f"{len(ints)} other labels are (it would become a class of its own "
                         f"and shift the others); fix the line")
    return True


def check_typos(entries: Sequence[tuple[str, str, int]], source: str) -> None:
    """``ValueError`` for a class name that occurs once in ``entries`` and is a near copy of
    a name that occurs several times (a typo would become a class)."""
    counts = Counter(label for _, label, _ in entries)
    common = [c for c, n in counts.items() if n > 1]
    for _, label, line in entries:
        if counts[label] != 1:
            continue
        near = difflib.get_close_matches(label, common, n=1, cutoff=0.85)
        if near:
            raise ValueError(f"{source}:{line}: class {label!r} occurs once, next to "
                             f"{counts[near[0]]} videos of {near[0]!r}: a typo would become "
                             f"a class and shift the others (fix the line, or list the "
                             f"classes in classes.json)")


def warn_split_overlaps(sources: Mapping[str, Sequence], where: str | Path) -> None:
    """One :class:`LabelWarning` per split that lists a video twice, and for a video of the
    training set that is also in the validation or test set. ``sources`` maps a split to
    records with a ``path``."""
    seen: dict[str, set[str]] = {}
    for split, recs in sources.items():
        paths = [str(Path(r.path)) for r in recs]
        twice = [p for p, n in Counter(paths).items() if n > 1]
        if twice:
            warnings.warn(f"{where}: {len(twice)} video(s) listed more than once in the "
                          f"{split} set, e.g. {twice[0]}", LabelWarning, stacklevel=3)
        seen[split] = set(paths)
    train = seen.get("train", set())
    for split in ("val", "test"):
        both = sorted(train & seen.get(split, set()))
        if both:
            warnings.warn(f"{where}: {len(both)} video(s) of the training set are also in "
                          f"the {split} set (the {split} score will be optimistic), e.g. "
                          f"{both[0]}", LabelWarning, stacklevel=3)
