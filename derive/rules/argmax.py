"""``argmax``: round 1's DARTS rule. The largest ``softmax(alpha)`` per node and the
largest ``softmax(beta)`` input; needs no data, and is meaningful only when alpha has
moved. A decision whose winner is below :data:`ARGMAX_FLAT` times the uniform weight is
flagged (with a few hundred Adam steps at the DARTS arch lr alpha stays within noise of
uniform)."""

from __future__ import annotations

import torch
from torch import nn

from supernet.cells import ArchParameters, NodeSpec
from supernet.space import OP_NAMES

from ..scoring import SelectionData
from .base import AllowedOps, Decision, SelectionRule, Tick, input_names, register_rule

__all__ = ["ARGMAX_FLAT", "Argmax"]

#: an argmax decision is flagged when its winner's weight is below this x uniform
ARGMAX_FLAT = 1.5


@register_rule("argmax")
class Argmax(SelectionRule):
    """The largest architecture weight, node by node (a budget skips the ops it excludes)."""

    score_label = "softmax weight"
    unit = "weight"
    needs_data = False

    def select(self, model: nn.Module, arch: ArchParameters, data: SelectionData | None,
               allowed_ops: AllowedOps, tick: Tick) -> tuple[list[NodeSpec], list[Decision]]:
        """Read ``softmax(alpha)`` ``(K, NUM_OPS)`` and the input weights ``(K, K)``."""
        ops = arch.op_weights().detach().cpu()
        ins = arch.input_weights().detach().cpu()
        nodes: list[NodeSpec] = []
        decisions: list[Decision] = []
        for k in range(arch.num_nodes):
            admissible = set(allowed_ops([OP_NAMES.index(n.op) for n in nodes]))
            for what, w, names in (("op", ops[k], list(OP_NAMES)),
                                   ("input", ins[k, :k + 1], input_names(k))):
                order = torch.argsort(w, descending=True).tolist()
                if what == "op":
                    order = [o for o in order if o in admissible]
                best = order[0]
                runner = order[1] if len(order) > 1 else None
                margin = float(w[best] - w[runner]) if runner is not None else 0.0
                decisions.append(Decision(
                    k, what, names[best], None if runner is None else names[runner], margin,
                    None, None if runner is None else bool(w[best] >= ARGMAX_FLAT / len(names)),
                    {names[i]: float(w[i]) for i in range(len(names))}))
            op_d, in_d = decisions[-2], decisions[-1]
            nodes.append(NodeSpec(op_d.choice, input_names(k).index(in_d.choice)))
        return nodes, decisions
