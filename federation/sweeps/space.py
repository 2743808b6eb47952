"""A search space written as Hydra sweep overrides, turned into Optuna distributions.

The syntax is hydra-optuna-sweeper's, so a space reads the same to anyone who has used it:

    federation: choice(fedadam, fedyogi)                   # a config group option
    federation.strategy.eta: tag(log, interval(1e-3, 1))  # a float, sampled on a log scale
    federation.local_steps: choice(50, 100, 200)
    federation.rounds: range(5, 20, step=5)               # 5, 10, 15 (Hydra's range leaves out its stop)
    model.embed_dim: tag(int, interval(16, 128))           # an integer

A value that is not a sweep is a fixed override of every trial. Every key must name a key
or a config group that the composed config has (a misspelt key would otherwise fail in the
first trial, or, with `+`, silently add a setting nothing reads); `+key` adds a new key on purpose.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep, Transformer
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from federation.settings import ConfigError

SETTING = "hydra.sweeper.params"


@dataclass
class SearchSpace:
    """What each trial samples (`distributions`) and what every trial sets the same (`fixed`)."""

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    fixed: list[str] = field(default_factory=list)

    def overrides(self, params: Mapping[str, object]) -> list[str]:
        """One trial's command-line overrides: the fixed ones, then its sampled values."""
        return [*self.fixed, *(f"{key}={value}" for key, value in params.items())]  # choices hold Hydra-encoded values


def search_space(params: Mapping[str, str] | None, arguments: Sequence[str], config: DictConfig) -> SearchSpace:
    """The space from the sweeper's `params` and the command line's sweeps (`key=a,b` is a choice too), keys checked."""
    lines = [f"{key}={value}" for key, value in (params or {}).items()]
    parsed = _parse([*lines, *arguments])
    space = SearchSpace()
    for override in parsed:
        key = override.get_key_element()
        if override.is_sweep_override():
            _require_key(config, key)
            space.distributions[key.lstrip("+")] = distribution(override)
        else:
            space.fixed.append(override.input_line)
    if not space.distributions:
        raise ConfigError(SETTING, dict(params or {}), "nothing to search: give at least one choice(), range() or interval()")
    return space


def distribution(override: Override) -> BaseDistribution:
    """Optuna's distribution for one sweep override: a choice or shuffled range is categorical."""
    value = override.value()
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if isinstance(value, RangeSweep):
        values = list(override.sweep_iterator())
        if all(isinstance(v, int) for v in values) and len(values) > 1:
            return IntDistribution(values[0], values[-1], step=values[1] - values[0])
        return CategoricalDistribution(values)
    if isinstance(value, IntervalSweep):
        log, whole = "log" in value.tags, "int" in value.tags
        if value.start >= value.end:
            raise ConfigError(f"{SETTING}.{override.get_key_element()}", override.get_value_element_as_str(), "interval(low, high) needs low < high")
        if whole:
            return IntDistribution(int(value.start), int(value.end), log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    raise ConfigError(f"{SETTING}.{override.get_key_element()}", override.get_value_element_as_str(), "use choice(), range() or interval()")


def _parse(lines: list[str]) -> list[Override]:
    from hydra.errors import OverrideParseException

    try:
        return OverridesParser.create().parse_overrides(lines)
    except OverrideParseException as error:
        raise ConfigError(SETTING, error.override, str(error).splitlines()[0]) from None


def _require_key(config: DictConfig, key: str) -> None:
    """The key names a config group (`federation`, `model/fusion`) or a key of the composed config (`a.b.c`)."""
    if key.startswith("+"):
        return  # adding a key is what `+` says
    if key.startswith("~"):
        raise ConfigError(SETTING, key, "a search cannot delete a key")
    bare = key.split("@", 1)[0]
    choices = OmegaConf.select(config, "hydra.runtime.choices") or {}
    if bare in choices or _has_key(config, bare):
        return
    raise ConfigError(SETTING, key, "the search space names a key or config group the composed config does not have "
                      "(a typo? a key of another group option? `+key` adds a new one)")


def _has_key(config: DictConfig, dotted: str) -> bool:
    node = config
    for part in dotted.split("."):
        if not isinstance(node, DictConfig) or part not in node.keys():
            return False
        node = node._get_node(part)
    return True

