"""The genotype, as ``derive`` hands it out: a derived (discrete) attention cell as a small,
versioned JSON document.

The format and its validation live with the cells they describe, in
:mod:`supernet.genotype` (so building a network from a genotype file does not import
``derive``: no import circle); this module is the name ``derive`` users import it by.
"""

from __future__ import annotations

from supernet.genotype import (
    FILE_MODE,
    FORMAT,
    VERSION,
    Genotype,
    GenotypeError,
    atomic_write_text,
    load_genotype,
    random_genotype,
    save_genotype,
)

__all__ = ["FORMAT", "VERSION", "Genotype", "GenotypeError", "load_genotype", "save_genotype",
           "random_genotype", "atomic_write_text", "FILE_MODE"]
