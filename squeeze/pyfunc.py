"""Every saved model folder is also an MLflow Model: a ``python_function`` flavour whose loader is this module.

    import mlflow
    model = mlflow.pyfunc.load_model("runs:/<run id>/model")      # or a folder, or models:/<name>/<version>
    model.predict(pd.DataFrame({"text": ["a great film", "dull"]}))  # sentiment: labels; NER: tags; dialogue: replies

The loader reads squeeze's own format (int8, sparse) through ``squeeze.formats`` (its codec): nothing is unpickled, and the
model predicts exactly as it was evaluated. ``mlflow.register_model`` takes the same URI.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

FLAVOR = "squeeze"


def add_flavor(folder: str | Path, task: str) -> None:
    """Write the ``MLmodel`` file that makes a saved folder an MLflow Model (pyfunc + a squeeze flavour)."""
    import mlflow
    from mlflow.models import Model

    mlmodel = Model()
    mlflow.pyfunc.add_to_model(mlmodel, loader_module="squeeze.pyfunc", data=".")
    mlmodel.add_flavor(FLAVOR, task=task, format="squeeze_format.json")
    mlmodel.save(str(Path(folder) / "MLmodel"))


def _load_pyfunc(path: str) -> "SqueezeModel":
    """MLflow's entry point: ``path`` is the model folder (the ``data`` of the pyfunc flavour)."""
    return SqueezeModel(path)


class SqueezeModel:
    """A saved model, its tokenizer and its task, predicting on texts."""

    def __init__(self, path: str | Path):
        import transformers

        from squeeze import formats
        from squeeze.registry import get_task

        self.model = formats.load(path)
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        task = formats.read_format(path).get("task")
        if task is None:
            raise ValueError(f"{path}: the folder does not say its task (saved before squeeze recorded it)")
        self.task = get_task(task)

    def predict(self, model_input, params=None) -> list:
        """Predictions for the texts in ``model_input``: a DataFrame (column ``text``, else the first), a Series or a
        list of strings."""
        if isinstance(model_input, pd.DataFrame):
            texts = model_input["text" if "text" in model_input else model_input.columns[0]].tolist()
        else:
            texts = list(model_input)
        return self.task.predict(self.model, self.tokenizer, [str(t) for t in texts])
