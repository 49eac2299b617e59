"""squeeze: measure the best way to compress a language model for a task.

Entry point: ``squeeze sweep sweeps/quickstart.yaml`` (see ``squeeze --help``); from Python,
``squeeze.study("sweeps/quickstart.yaml")`` returns the trials as a pandas frame (``squeeze.api``).
"""

__version__ = "0.1.0"


def study(source, **kwargs):
    """``squeeze study`` from Python; returns ``analysis.runs.load_runs``'s frame (see ``squeeze.api.study``)."""
    from squeeze import api

    return api.study(source, **kwargs)


def __getattr__(name):
    """``squeeze.sweep(...)``: the driver module ``squeeze.driver.sweep`` is itself callable (``squeeze.api.sweep``), so
    ``from squeeze import sweep; sweep.run(cfg)`` and ``squeeze.sweep("file.yaml")`` both work."""
    if name == "sweep":
        import importlib

        return importlib.import_module("squeeze.driver.sweep")
    raise AttributeError(f"module 'squeeze' has no attribute {name!r}")


def load(path):
    """A model saved by squeeze (a trial's ``model`` folder or artifact): dense, int8 or sparse, bit for bit.

    Args:
        path: the folder, or an MLflow URI (``runs:/<run id>/model``, ``models:/<name>/<version>``).

    Returns:
        the ``torch.nn.Module`` (a transformers model, int8 layers included); its tokenizer is in the same folder.
    """
    from squeeze import formats

    path = str(path)
    if ":/" in path:
        import mlflow

        path = mlflow.artifacts.download_artifacts(artifact_uri=path)
    return formats.load(path)
