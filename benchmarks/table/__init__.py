"""attnas-bench: a ground-truth table of the attention-cell space.

Every cell of a set (all one-node cells, a uniform sample of three-node cells, the
project's searched and random cells, the baseline blocks) trained with one fixed, cheap
:class:`~benchmarks.table.protocol.Protocol` on each synthetic :mod:`task
<benchmarks.table.tasks>`, with several seeds; stored as data under
``benchmarks/results/table/`` and queried by architecture string
(:class:`~benchmarks.table.store.Table`). Searches never read it: it scores them.
"""
