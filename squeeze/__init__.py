"""squeeze: measure the best way to compress a language model for a task.

Entry point: ``squeeze sweep sweeps/quickstart.yaml`` (see ``squeeze --help``).
"""

__version__ = "0.1.0"


def load(path):
    """A model saved by squeeze (a trial's ``model`` folder or artifact): dense, int8 or sparse, bit for bit.

    Args:
        path: the folder, or an MLflow URI (``runs:/<run id>/model``, ``models:/<name>/<version>``).

    Returns:
        the ``torch.nn.Module`` (a transformers model, int8 layers included); its tokenizer is in the same folder.
    """
    from squeeze import serialize

    path = str(path)
    if ":/" in path:
        import mlflow

        path = mlflow.artifacts.download_artifacts(artifact_uri=path)
    return serialize.load(path)
