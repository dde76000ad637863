"""The registry of op rules, keyed by ATen overload (``aten.conv2d.default``) or packet
(``aten.add``); anything unregistered gets the barrier rule (:class:`base.Rule`)."""

from __future__ import annotations

from torch import fx

from .base import Rule

_RULES: dict[str, Rule] = {}
_DEFAULT = Rule()


def register(rule: Rule, *names: str) -> Rule:
    for name in names:
        _RULES[name] = rule
    return rule


def _key(target: object) -> tuple[str, str]:
    name = getattr(target, "__name__", str(target))  # e.g. "conv2d.default"
    ns = getattr(target, "namespace", "aten")
    return f"{ns}.{name}", f"{ns}.{name.split('.')[0]}"


def rule_for(node: fx.Node) -> Rule:
    if node.op != "call_function":
        return _DEFAULT
    full, packet = _key(node.target)
    return _RULES.get(full) or _RULES.get(packet) or _RULES.get(str(node.target)) or _DEFAULT


def known_ops() -> list[str]:
    return sorted(_RULES)
