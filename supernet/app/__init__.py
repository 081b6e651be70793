"""The app layer: the ``attnas`` command (:mod:`.cli`, the console script) and what only
commands use -- the subcommands (search, retrain, derive, data, cost, export, predict, demo,
two-stream search), the LightningCLI wrapper, the run logger, the checkpoint and thread
callbacks, the attention pictures of ``predict``.

It sits on top of the import graph: it may import ``datamodules``, the ``supernet`` core,
``derive`` and (by name, in the dispatcher) ``benchmarks``; nothing outside this package
imports it (``tests/test_import_graph.py`` checks).
"""
