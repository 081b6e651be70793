"""Something-Something v2 as released: ``labels.json``, ``train.json``, ``validation.json``
(in the root or ``labels/``) and the videos ``<id>.webm`` (in the root or
``20bn-something-something-v2/``).

``labels.json`` maps each of the 174 templates to its index (``{"Holding something next to
something": "44", ...}``). A video entry is ``{"id": "78687", "label": "holding potato next
to vicks vaporub bottle", "template": "Holding [something] next to [something]",
"placeholders": [...]}``: its class is the template with the brackets of the placeholders
removed. ``test.json`` has no labels and is not read; the test split is the validation
split.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..datasets import VideoRecord
from .base import FormatData, FormatError, FormatReader, index_files

__all__ = ["SomethingSomethingV2", "template_class"]

_WHERE = ("", "labels", "annotations")


def template_class(template: str) -> str:
    """``"Putting [something] into [something]"`` -> ``"Putting something into something"``."""
    return template.replace("[", "").replace("]", "")


def _load(path: Path, kind: type) -> object:
    try:
        doc = json.loads(path.read_text(errors="replace"))
    except ValueError as err:
        raise FormatError(f"{path}: not JSON ({err.__class__.__name__}); expected "
                          f"Something-Something v2's {path.name}") from None
    if not isinstance(doc, kind):
        what = "an object {template: index}" if kind is dict else "a list of {id, template}"
        raise FormatError(f"{path}: expected {what} (Something-Something v2 {path.name})")
    return doc


class SomethingSomethingV2(FormatReader):
    """Something-Something v2: ``labels.json`` + ``train.json`` / ``validation.json``."""

    name = "ssv2"
    title = "Something-Something v2"

    @classmethod
    def detect(cls, root: Path) -> bool:  # noqa: D102
        return any((root / w / "labels.json").is_file() and (root / w / "train.json").is_file()
                   for w in _WHERE)

    def read(self) -> FormatData:  # noqa: D102
        labels_file = self.find(["labels.json"], _WHERE)
        if labels_file is None:
            raise self.missing_files("labels.json")
        labels = _load(labels_file, dict)
        try:
            index = {str(k): int(v) for k, v in labels.items()}  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise FormatError(f"{labels_file}: expected an object {{template: index}} "
                              f"(Something-Something v2 labels.json)") from None
        if sorted(index.values()) != list(range(len(index))):
            raise FormatError(f"{labels_file}: expected class indices 0..{len(index) - 1}")
        classes = [""] * len(index)
        for name, i in index.items():
            classes[i] = name
        videos = index_files(self.video_root())
        data = FormatData(classes, {}, files=[str(labels_file)])
        for split, name in (("train", "train.json"), ("val", "validation.json")):
            f = labels_file.parent / name
            if not f.is_file():
                if split == "train":
                    raise FormatError(f"{f} does not exist: expected Something-Something v2's "
                                      f"train.json next to {labels_file.name}")
                data.notes.append(f"no {name}: the validation split is made from train")
                continue
            data.files.append(str(f))
            recs, missing = [], []
            for k, entry in enumerate(_load(f, list)):  # type: ignore[arg-type]
                if not isinstance(entry, dict) or "id" not in entry or "template" not in entry:
                    raise FormatError(f"{f}: entry {k} is not an object with 'id' and "
                                      f"'template' (Something-Something v2 {name})")
                cls = template_class(str(entry["template"]))
                if cls not in index:
                    raise FormatError(f"{f}: entry {k} (id {entry['id']}): template {cls!r} "
                                      f"is not a class of {labels_file.name}")
                path = videos.get(str(entry["id"]).lower())
                if path is None:
                    missing.append(str(entry["id"]))
                else:
                    recs.append(VideoRecord(path, index[cls]))
            data.splits[split] = recs
            data.missing[split] = missing
            data.listed[split] = len(recs) + len(missing)
        return data
