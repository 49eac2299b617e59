"""The driver: what runs on the machine that launches a study, around the one Ray Tune trainable.

``sweep``: a stage from config to Ray Tune and MLflow (the Tuner, the parent run, the latency pass);
``dag``: stages as a graph, each started when its sources are complete; ``stage``: a stage's identity, its
MLflow parent and the plan of its points by state (resume, retry); ``points`` / ``point_store``: a stage's
trials as explicit keyed points and their checkpoints; ``search_space``: the YAML's samplers, checked and resolved
per trial; ``search``: searchers, schedulers, budgets and fronts (recipe search); ``preflight``: the checks
that need more than the config (files, sources, the machine) before Ray starts; ``overrides``: ``key=value`` on a
raw sweep file; ``trial``: the Ray Tune trainable (it adapts ``squeeze.recipe`` to Ray and MLflow).
What a technique needs from the driver it declares on its class (``squeeze.techniques.base``).
"""
