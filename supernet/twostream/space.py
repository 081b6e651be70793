"""The multivariate two-stream space (after Auto-TSNet, Gong et al., ICCV 2021), as data,
and the architecture file every stage of its progressive search writes.

Eight variables, each a small set of values whose costs differ, grouped into the three
stages the search decides in turn (streams, then fusion, then attention):

==============  =================  ===========================================================
variable        values             meaning
==============  =================  ===========================================================
frame_ratio     2, 4, 8            fast / slow frame ratio (SlowFast's alpha): the slow
                                   stream reads T / frame_ratio frames
beta_inv        2, 4, 8            slow / fast channel ratio: the fast stream is 1/beta as wide
slow_kt         1, 3               temporal kernel of the slow res4 / res5 blocks
fast_kt         1, 3, 5            temporal kernel of every fast block
fusion          tconv, tsample,    the fast -> slow fusion operator
                avgpool, sum
fusion_at       all, early, late,  which fusions exist (after the stems and res2..res4)
                none
attention       none, nonlocal,    the attention block (``cell``: a searched cell, given as a
                a2, cell           genotype file)
attention_at    slow, fast, both   the pathway(s) it goes into, after the last block of res3
                                   and res4
==============  =================  ===========================================================

The hand-designed point (:data:`SLOWFAST_DEFAULT`) is SlowFast's: frame ratio 4, beta 1/8, kernels
3, time-strided-conv fusion everywhere, no attention. It is the seeds' anchor of the
benchmark and the fixed value of every variable a stage does not search.

An **architecture file** (``attnas-twostream``, version 2) is a JSON object::

    {"format": "attnas-twostream", "version": 2, "stage": "fusion",
     "values": {"frame_ratio": 4, ...all eight...}, "decided": ["frame_ratio", ..., "fusion_at"],
     "cell": <genotype dict or null>, "network": {"width_div": 8, "depths": [1, 1, 1, 1],
     "stem_pool": false}, "provenance": {"streams": {...}, "fusion": {...}}}

``decided`` lists the variables searched so far (the others hold their defaults);
``provenance`` keeps, per stage, the selection record (every decision with its margin),
the supernet mode, the seed, the search seconds and the result's params / MACs.
Version 1 called ``frame_ratio`` ``alpha``; such a file still loads (renamed on reading;
its ``provenance`` is kept as it was written).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from datamodules.atomic import atomic_write_text

__all__ = ["Variable", "VARIABLES", "VARIABLE_NAMES", "STAGES", "SLOWFAST_DEFAULT",
           "TwoStreamArch", "load_arch", "variables_of", "attention_positions", "ARCH_FORMAT",
           "inactive", "RENAMED_VARIABLES", "migrate_values"]

ARCH_FORMAT = "attnas-twostream"
_VERSION = 2
#: the versions :func:`load_arch` reads (1: ``frame_ratio`` was called ``alpha``)
_READS = (1, 2)
#: the stages of the progressive search, in order
STAGES: tuple[str, ...] = ("streams", "fusion", "attention")


class Variable(NamedTuple):
    """One variable of the space: its values, the stage that searches it, and whether
    the supernet can mix its values in one forward pass (``frame_ratio`` cannot: the slow stream
    reads a different number of frames for each value, so a step samples one)."""

    name: str
    values: tuple
    stage: str
    mixable: bool
    help: str


VARIABLES: tuple[Variable, ...] = (
    Variable("frame_ratio", (2, 4, 8), "streams", False,
             "fast / slow frame ratio, SlowFast's alpha (the slow stream reads T / frame_ratio "
             "frames)"),
    Variable("beta_inv", (2, 4, 8), "streams", True,
             "slow / fast channel ratio (the fast stream is 1 / beta_inv as wide)"),
    Variable("slow_kt", (1, 3), "streams", True, "temporal kernel of the slow res4 / res5"),
    Variable("fast_kt", (1, 3, 5), "streams", True, "temporal kernel of the fast blocks"),
    Variable("fusion", ("tconv", "tsample", "avgpool", "sum"), "fusion", True,
             "fast -> slow fusion operator"),
    Variable("fusion_at", ("all", "early", "late", "none"), "fusion", True,
             "which fusions exist: after the stems and res2..res4 / the first two / the "
             "last two / none"),
    Variable("attention", ("none", "nonlocal", "a2", "cell"), "attention", True,
             "attention block after the last block of res3 and res4 (cell: a genotype)"),
    Variable("attention_at", ("slow", "fast", "both"), "attention", True,
             "the pathway(s) the attention blocks go into"),
)
VARIABLE_NAMES: tuple[str, ...] = tuple(v.name for v in VARIABLES)
_BY_NAME = {v.name: v for v in VARIABLES}

#: SlowFast's hand-designed point of the space
SLOWFAST_DEFAULT: dict[str, Any] = {"frame_ratio": 4, "beta_inv": 8, "slow_kt": 3,
                                    "fast_kt": 3, "fusion": "tconv", "fusion_at": "all",
                                    "attention": "none", "attention_at": "slow"}
#: variables renamed in 0.x (old name -> new name); the old names are read from files and
#: records (:func:`migrate_values`) and accepted, with a ``DeprecationWarning``, by
#: :meth:`TwoStreamArch.create` for one release
RENAMED_VARIABLES: dict[str, str] = {"alpha": "frame_ratio"}


def migrate_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` (variable name -> value) with the old names of :data:`RENAMED_VARIABLES`
    renamed (what an architecture file of version 1 or a stored record holds); the new
    name wins where both are present."""
    out = {}
    for name, value in values.items():
        new = RENAMED_VARIABLES.get(name, name)
        if new == name or new not in values:
            out[new] = value
    return out


def _warn_renamed(names: list[str], where: str) -> None:
    """A ``DeprecationWarning`` for each old variable name among ``names`` (once each),
    pointing at the caller of ``where``."""
    for name in dict.fromkeys(n for n in names if n in RENAMED_VARIABLES):
        warnings.warn(f"{where}: two-stream variable {name} is deprecated and will be "
                      f"removed in the next release; use {RENAMED_VARIABLES[name]}",
                      DeprecationWarning, stacklevel=3)


def variables_of(stage: str) -> tuple[Variable, ...]:
    """The variables a stage searches; ``ValueError`` for an unknown stage."""
    if stage not in STAGES:
        raise ValueError(f"unknown two-stream stage {stage!r}; accepted: {', '.join(STAGES)}")
    return tuple(v for v in VARIABLES if v.stage == stage)


def variable(name: str) -> Variable:
    """The :class:`Variable` called ``name``; ``ValueError`` listing the names."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown two-stream variable {name!r}; accepted: "
                         f"{', '.join(VARIABLE_NAMES)}") from None


def inactive(name: str, values: Mapping[str, Any]) -> bool:
    """Whether variable ``name`` has no effect given the other ``values`` (the pathway of
    attention ``none``; the operator of fusion sites ``none``): selection then leaves it
    at its default instead of scoring a tie."""
    if name == "attention_at":
        return values.get("attention") == "none"
    if name == "fusion":
        return values.get("fusion_at") == "none"
    return False


def attention_positions(pathway: str, depths: tuple[int, ...]) -> dict[str, list[int]]:
    """Insertion positions of the attention blocks: after the last block of res3 and res4
    of the slow pathway, the fast one, or both (``pathway`` in ``slow | fast | both``)."""
    slow = {"res3": [int(depths[1]) - 1], "res4": [int(depths[2]) - 1]}
    fast = {f"fast_{k}": v for k, v in slow.items()}
    return {"slow": slow, "fast": fast, "both": {**slow, **fast}}[pathway]


class TwoStreamArch(NamedTuple):
    """A point of the space with the record of how it was found (see the module
    docstring). Build one with :meth:`create` (checked) or :func:`load_arch`."""

    values: dict[str, Any]
    stage: str | None = None  # the last stage decided (None: nothing searched)
    decided: tuple[str, ...] = ()
    cell: dict[str, Any] | None = None  # genotype of attention "cell", as JSON
    provenance: dict[str, Any] = {}
    #: the network's size where it was searched (``width_div``, ``depths``, ``stem_pool``):
    #: the defaults of :func:`supernet.twostream.twostream` for this file
    network: dict[str, Any] = {}

    @classmethod
    def create(cls, values: Mapping[str, Any] | None = None, stage: str | None = None,
               decided: tuple[str, ...] | list[str] = (), cell: dict[str, Any] | None = None,
               provenance: dict[str, Any] | None = None,
               network: dict[str, Any] | None = None) -> TwoStreamArch:
        """The defaults updated with ``values``, checked; ``ValueError`` (one line) for an
        unknown variable or value, or a ``cell`` attention without a cell. An old variable
        name (:data:`RENAMED_VARIABLES`) in ``values`` or ``decided`` is renamed, with a
        ``DeprecationWarning``."""
        values = dict(values or {})
        if any(name in RENAMED_VARIABLES for name in [*values, *decided]):
            _warn_renamed([*values, *decided], "TwoStreamArch.create")
            values, decided = migrate_values(values), [RENAMED_VARIABLES.get(n, n)
                                                       for n in decided]
        merged = dict(SLOWFAST_DEFAULT)
        for name, value in values.items():
            var = variable(name)
            if value not in var.values or isinstance(value, bool):
                raise ValueError(f"two-stream variable {name}: {value!r} is not one of "
                                 f"{', '.join(map(str, var.values))}")
            merged[name] = value
        if stage is not None and stage not in STAGES:
            raise ValueError(f"unknown two-stream stage {stage!r}; accepted: "
                             f"{', '.join(STAGES)}")
        for name in decided:
            variable(name)
        if merged["attention"] == "cell" and not isinstance(cell, dict):
            raise ValueError("two-stream attention 'cell' needs the cell's genotype "
                             "(give --model.attention_cell GENOTYPE.json)")
        net = dict(network or {})
        unknown = set(net) - {"width_div", "depths", "stem_pool"}
        if unknown:
            raise ValueError(f"unknown network setting(s) {sorted(unknown)}; accepted: "
                             f"width_div, depths, stem_pool")
        return cls(merged, stage, tuple(decided), cell, dict(provenance or {}), net)

    def backbone_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`supernet.backbones.slowfast_r50` for this point."""
        v = self.values
        return {"frame_ratio": v["frame_ratio"], "beta_inv": v["beta_inv"],
                "slow_kt": v["slow_kt"], "fast_kt": v["fast_kt"], "fusion": v["fusion"],
                "fusion_at": v["fusion_at"]}

    def describe(self) -> str:
        """One line: every variable's value, the decided ones marked ``*``."""
        return ", ".join(f"{k}{'*' if k in self.decided else ''}={v}"
                         for k, v in self.values.items())

    def to_dict(self) -> dict[str, Any]:
        """The JSON document."""
        return {"format": ARCH_FORMAT, "version": _VERSION, "stage": self.stage,
                "values": dict(self.values), "decided": list(self.decided),
                "cell": self.cell, "network": self.network, "provenance": self.provenance}

    def save(self, path: str | Path) -> Path:
        """Write the JSON document atomically (temp file + rename)."""
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")


def load_arch(source: str | Path | Mapping[str, Any]) -> TwoStreamArch:
    """Read an architecture file (or its parsed document); ``ValueError`` (one line) for
    a missing file, invalid JSON, another format or version, or bad values."""
    if isinstance(source, Mapping):
        doc, where = dict(source), "two-stream architecture"
    else:
        where = os.fspath(source)
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"no such two-stream architecture file: {where!r}")
        try:
            doc = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{where}: not valid JSON ({err})") from None
    if not isinstance(doc, dict) or doc.get("format") != ARCH_FORMAT:
        raise ValueError(f"{where}: not a two-stream architecture (format "
                         f"{doc.get('format') if isinstance(doc, dict) else None!r}, "
                         f"expected {ARCH_FORMAT!r})")
    if doc.get("version") not in _READS:
        raise ValueError(f"{where}: version {doc.get('version')!r} of {ARCH_FORMAT} is not "
                         f"supported (this attnas reads versions "
                         f"{', '.join(map(str, _READS))})")
    values = doc.get("values")
    if not isinstance(values, dict):
        raise ValueError(f"{where}: 'values' must be an object of the eight variables")
    values = migrate_values(values)
    decided = [RENAMED_VARIABLES.get(n, n) for n in list(doc.get("decided") or [])]
    missing = [n for n in VARIABLE_NAMES if n not in values]
    if missing:
        raise ValueError(f"{where}: missing variable(s) {', '.join(missing)}")
    try:
        return TwoStreamArch.create(values, doc.get("stage"), decided,
                                    doc.get("cell"), doc.get("provenance") or {},
                                    doc.get("network") or {})
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
