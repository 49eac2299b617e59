"""Checks across stages and against the machine, on the driver, before Ray starts (and in ``--dry-run``).

The schema (``squeeze.config``) checks each sweep on its own; this module checks what needs more than one
sweep or knowledge of the model and the machine: a source stage that exists, runs the same task (or is the
prune stage) on the same model family, a PKD student no deeper than its teacher, ``max_length`` within the
model's positions, ``device: cuda`` where a GPU can be had; and the services a run will use: ``RAY_ADDRESS``, the
storage URI or folder, the cache folder.

Raises ``ConfigError`` naming the sweep and field, with the fix.
"""

from __future__ import annotations

import os

from squeeze import presets
from squeeze.driver.overrides import ConfigError
from squeeze.registry import get_task_class, get_technique_class


def _config(name: str):
    """The model's transformers config without its weights (None when it cannot be read here)."""
    if name in presets.TINY:
        return None
    try:
        import transformers

        return transformers.AutoConfig.from_pretrained(presets.resolve_source(name))
    except Exception:
        return None


def max_positions(name: str) -> int | None:
    """Tokens the model can take (RoBERTa reserves two positions for its padding offset)."""
    if name in presets.TINY:
        return 512
    if name == "smollm2":
        return 8192
    cfg = _config(name)
    n = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
    return None if n is None else n - (2 if getattr(cfg, "model_type", "") in ("roberta", "xlm-roberta") else 0)


def depth(name: str) -> int | None:
    if name == "smollm2":
        return 30  # known without converting it
    if name in presets.TINY:
        return presets.TINY[name]["config"].get("num_hidden_layers") or presets.TINY[name]["config"].get("n_layer") or \
            presets.TINY[name]["config"].get("n_layers")
    cfg = _config(name)
    return getattr(cfg, "num_hidden_layers", None)


def _where(cfg, i: int, field: str) -> str:
    return f"sweeps.{i}.{field} ({cfg.sweeps[i].name})"


def check_sources(cfg, i: int, known_elsewhere) -> None:
    """A sweep's source: in the file (or finished in the experiment), same task or the prune stage, same family."""
    s = cfg.sweeps[i]
    if s.source is None:
        return
    names = [x.name for x in cfg.sweeps]
    if s.source.sweep not in names:
        if not known_elsewhere(s.source.sweep):
            raise ConfigError(f"{_where(cfg, i, 'source.sweep')}: no sweep {s.source.sweep!r} in this file or finished "
                              f"in the experiment; sweeps in the file: {', '.join(names)}")
        return
    origin = cfg.sweeps[names.index(s.source.sweep)]
    if origin.task != s.task and not get_task_class(origin.task).pretraining:
        raise ConfigError(f"{_where(cfg, i, 'source.sweep')}: {origin.name!r} runs task {origin.task!r}, this sweep "
                          f"{s.task!r}: a stage starts from trials of its own task (or of the prune stage)")
    if presets.model_type(origin.model.name) != presets.model_type(s.model.name):
        raise ConfigError(f"{_where(cfg, i, 'model.name')}: {s.model.name!r} is not the model family of its source "
                          f"{origin.name!r} ({origin.model.name!r})")
    from squeeze.driver.search_space import points

    for t in s.technique:  # what each technique needs of its source's model (a PKD student no deeper than its teacher),
        try:               # for every value the search space gives it
            for _, params in points(s, t):
                get_technique_class(t).check_source(params, origin.model.name, depth)
        except ValueError as exc:
            field, _, msg = str(exc).partition(": ")
            raise ConfigError(f"{_where(cfg, i, field)}: {msg}") from None


def check_machine(cfg, i: int) -> None:
    """max_length within the model's positions; a CUDA device only where a GPU can be had."""
    s = cfg.sweeps[i]
    limit = max_positions(s.model.name)
    if limit is not None and s.train.max_length > limit:
        raise ConfigError(f"{_where(cfg, i, 'train.max_length')}: {s.train.max_length} tokens, but {s.model.name!r} "
                          f"takes at most {limit}")
    wants_gpu = s.train.device == "cuda" or s.resources.gpu > 0
    if s.train.device == "cuda" and s.resources.gpu == 0:
        raise ConfigError(f"{_where(cfg, i, 'train.device')}: cuda needs resources.gpu > 0 (a trial gets no GPU otherwise)")
    local = not os.environ.get("RAY_ADDRESS")  # a private local Ray: this machine is the cluster
    if local and s.resources.cpu > (os.cpu_count() or 1):
        raise ConfigError(f"{_where(cfg, i, 'resources.cpu')}: a trial asks for {s.resources.cpu:g} CPUs, this machine has "
                          f"{os.cpu_count()} (set RAY_ADDRESS to run on a cluster)")
    if wants_gpu and local:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"{_where(cfg, i, 'resources.gpu' if s.resources.gpu else 'train.device')}: this machine "
                              "has no CUDA GPU (set RAY_ADDRESS to run on a cluster that has one)")
    from squeeze.driver.search_space import points

    for t in s.technique:  # what a technique needs of the hardware (fp8: a GPU with fp8 tensor cores), for every value
        check = getattr(get_technique_class(t), "check_machine", None)  # a plug-in technique may not declare it
        if check is None:
            continue
        try:
            for train, params in points(s, t):
                check(params, train.device, s.resources.gpu, local)
        except ValueError as exc:
            field, _, msg = str(exc).partition(": ")
            raise ConfigError(f"{_where(cfg, i, field)}: {msg}") from None


def check(cfg, known_elsewhere=lambda name: False) -> None:
    """Every check of this module, for every sweep of the file."""
    for i in range(len(cfg.sweeps)):
        check_sources(cfg, i, known_elsewhere)
        check_machine(cfg, i)


def check_ray_address(timeout: float = 5.0) -> None:
    """``RAY_ADDRESS`` must answer before ``ray.init`` is asked to join it (Ray retries a dead address for minutes).

    Raises:
        ConfigError: naming the address and what is allowed.
    """
    import socket

    address = os.environ.get("RAY_ADDRESS")
    if not address or address in ("auto", "local") or address.startswith("ray://"):
        if address and address.startswith("ray://"):
            address = address[len("ray://"):]
        else:
            return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"RAY_ADDRESS {address!r}: expected HOST:PORT of a running Ray head (or auto)")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise ConfigError(f"RAY_ADDRESS {address!r}: no Ray head answers there ({exc.strerror or exc}); start it "
                          "(ray start --head, ray up cluster.yaml) or unset RAY_ADDRESS for a private local Ray") from None


def writable_folder(path: str, field: str) -> None:
    """A local folder squeeze writes into (Ray storage, the cache) exists or can be made, and is writable.

    Raises:
        ConfigError: naming the field and the folder.
    """
    from squeeze.folders import why_unwritable

    why = why_unwritable(path)
    if why:
        raise ConfigError(f"{field} {path}: {why}")


def check_storage(storage_path: str, timeout: float = 20.0) -> None:
    """A storage URI (``s3://...``) must be reachable and listable before any trial writes to it; a local folder
    must be writable.

    Raises:
        ConfigError: naming ``storage_path`` and the reason.
    """
    if "://" not in storage_path:
        return writable_folder(storage_path, "storage_path")
    import concurrent.futures

    from squeeze.tracking import mask_secrets

    def probe():
        import pyarrow.fs

        fs, root = pyarrow.fs.FileSystem.from_uri(storage_path)
        fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))

    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        pool.submit(probe).result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        raise ConfigError(f"storage_path {mask_secrets(storage_path)}: no answer within {timeout:.0f} s") from None
    except Exception as exc:
        raise ConfigError(f"storage_path {mask_secrets(storage_path)}: cannot be used "
                          f"({type(exc).__name__}: {mask_secrets(str(exc))[:300]})") from None
    finally:
        pool.shutdown(wait=False)
