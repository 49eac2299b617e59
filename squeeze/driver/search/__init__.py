"""Recipe search: which trials a stage runs (searchers), which it stops early (schedulers), what it may spend
(budgets), and the front of its trials (several objectives, hypervolume).

``spec``: the YAML's ``search``, ``objectives``, ``constraints`` and ``budget``, validated before Ray starts.
``front``: non-dominated sorting and hypervolume (pure NumPy; the MO scheduler and ``analysis`` share it).
``schedulers``: Ray Tune's ASHA and asynchronous HyperBand, and MO-ASHA; each marks the trials it stops.
``searchers``: one Ray Tune ``Searcher`` that hands out a stage's points (squeeze's own grid/random points, or
Optuna's TPE / NSGA-II draws) and stops when the budget is spent.
"""
