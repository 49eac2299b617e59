"""How squeeze reads YAML (sweep files and ``key=value`` overrides): PyYAML's safe loader with YAML 1.2's numbers
and booleans.

PyYAML implements YAML 1.1, whose numbers and booleans surprise a sweep file:

- a float needs a dot and a signed exponent, so ``1e-3``, ``2E5`` and ``1.0e3`` were strings: accepted where a field
  coerces them (``lr: 1e-3``), refused with a puzzling message by ``loguniform: [1e-4, 1e-2]``, and kept as text in a
  grid (``grid_search: [1e-3, 2e-3]``), where the point's key and params then differed from the same grid written
  ``0.001``;
- base-60 numbers: ``pattern: 2:4`` (an N:M sparsity pattern) was the integer 124;
- ``yes``, ``no``, ``on``, ``off``, ``y`` and ``n`` were booleans: ``label_map: {yes: pos, no: neg}`` mapped the labels
  ``True`` and ``False``, which the data does not have.

Here, as in YAML 1.2, ``1e-3`` is a float, ``2:4`` and ``yes`` are text, and only ``true`` and ``false`` are booleans
(a boolean field still takes ``yes`` / ``no`` / ``on`` / ``off``: pydantic reads them). And a key that appears twice in
one mapping is refused (the last would silently win).
"""

from __future__ import annotations

import re

import yaml

# YAML 1.2's core schema: a float has a dot or an exponent (its sign optional); no base-60 integers or floats
_FLOAT = re.compile(r"""^(?:[-+]?[0-9][0-9_]*(?:\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[eE][-+]?[0-9]+)
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)
_INT = re.compile(r"""^(?:[-+]?0b[0-1_]+
    |[-+]?0[0-7_]+
    |[-+]?(?:0|[1-9][0-9_]*)
    |[-+]?0x[0-9a-fA-F_]+)$""", re.X)
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_REPLACED = ("tag:yaml.org,2002:float", "tag:yaml.org,2002:int", "tag:yaml.org,2002:bool")


class Loader(yaml.SafeLoader):
    """The safe loader with YAML 1.2's numbers and booleans, refusing duplicate keys."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` merges keys an explicit key may override
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


Loader.yaml_implicit_resolvers = {first: [(tag, rx) for tag, rx in resolvers if tag not in _REPLACED]
                                  for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
Loader.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL, list("tTfF"))
Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+.0123456789"))
Loader.add_implicit_resolver("tag:yaml.org,2002:int", _INT, list("-+0123456789"))


def load(text: str):
    """One YAML document, as squeeze reads it.

    Raises:
        yaml.YAMLError: malformed YAML or a duplicate key.
    """
    return yaml.load(text, Loader=Loader)
