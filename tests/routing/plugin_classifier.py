"""Classifiers a test config plugs in through `gateway.classifier.kind`."""


def always_math(chat, facts):
    return "math"


def defer(chat, facts):
    return None


def nonsense(chat, facts):
    return "poetry"


def broken(chat, facts):
    raise RuntimeError("classifier bug")


not_callable = 42
