"""Samples taken apart: every field in turn replaced by each value of the wrong kind."""

from __future__ import annotations

import copy

WRONG = ["x", 5, True, None, [], [{}], {}, {"type": 1}]


def _paths(value, prefix=()):
    if prefix:
        yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _paths(item, (*prefix, i))


def variants(sample):
    """(path, wrong value, the sample with that field replaced) for every field and wrong value."""
    for path in _paths(sample):
        for wrong in WRONG:
            broken = copy.deepcopy(sample)
            node = broken
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = wrong
            yield path, wrong, broken
