"""The two-stream search (after Auto-TSNet): a multivariate space of streams, fusions and
attention (:mod:`.space`), its weight-sharing supernet (:mod:`.elastic`), one Lightning
module per stage of the progressive search (:mod:`.search`) and the builder of the
searched network (:func:`twostream`)."""

from .build import twostream
from .elastic import ElasticTwoStream, StageChoices
from .space import (
    SLOWFAST_DEFAULT,
    STAGES,
    VARIABLE_NAMES,
    VARIABLES,
    TwoStreamArch,
    load_arch,
    variables_of,
)

__all__ = ["twostream", "ElasticTwoStream", "StageChoices", "SLOWFAST_DEFAULT", "STAGES",
           "VARIABLE_NAMES", "VARIABLES", "TwoStreamArch", "load_arch", "variables_of"]
