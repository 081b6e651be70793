"""attnas derive: the genotype format (versioned JSON), discretisation of architecture
parameters, and pictures of a cell and of the architecture weights."""

from .draw import arch_csv_header, draw_cell, plot_alpha, read_arch_csv, write_arch_csv_row
from .genotype import (
    FORMAT,
    VERSION,
    Genotype,
    GenotypeError,
    load_genotype,
    random_genotype,
    save_genotype,
)

__all__ = [
    "FORMAT",
    "VERSION",
    "Genotype",
    "GenotypeError",
    "load_genotype",
    "save_genotype",
    "random_genotype",
    "draw_cell",
    "plot_alpha",
    "write_arch_csv_row",
    "read_arch_csv",
    "arch_csv_header",
]
