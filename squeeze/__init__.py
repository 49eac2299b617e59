"""squeeze: measure the best way to compress a language model for a task.

Entry point: ``squeeze sweep sweeps/quickstart.yaml`` (see ``squeeze --help``).
"""

__version__ = "0.1.0"
