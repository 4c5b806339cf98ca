"""What an MLPerf run asks of LoadGen, parsed once from `wanbench mlperf`'s flags or a suite's [mlperf] table.

Both go through `loadgen_settings`, so a bad value is refused in one line before anything loads, named as the
user wrote it (`--min-query-count 0` or `min_query_count = 0`). LoadGen itself takes out-of-range values
without a word and then crashes or runs away (a negative expected latency filled 24 GB of host memory).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from wanbench.errors import UserError
from wanbench.settings import typed

SCENARIOS = ("SingleStream", "Offline")


@dataclass(frozen=True)
class LoadGenSettings:
    scenario: str = "SingleStream"
    min_duration_s: float = 60.0  # LoadGen runs at least this long ...
    min_query_count: int = 3  # ... and at least this many queries (a valid result needs far more: 64+)
    expected_latency_s: float | None = None  # a hint that sizes LoadGen's query schedule
    prompts: str | None = None  # a text file, one prompt a line; None: the built-in prompts


# Each field's flag on `wanbench mlperf` (a suite's [mlperf] table uses the field names).
FLAGS = {"scenario": "--scenario", "min_duration_s": "--min-duration", "min_query_count": "--min-query-count",
         "expected_latency_s": "--expected-latency", "prompts": "--prompts"}
# (field, the least it takes, whether the least itself is allowed, the most, what to give); the most keeps LoadGen's
# integer nanoseconds and counts in range (infinity or 1e20 crashed it)
BOUNDS = (("min_duration_s", 0, True, 1e7, "0 to 10^7 seconds"),
          ("min_query_count", 1, True, 10**9, "1 to 10^9 (LoadGen needs a query to measure)"),
          ("expected_latency_s", 0, False, 1e7, "a positive number of seconds per sample, up to 10^7"))


def loadgen_settings(values: dict[str, Any], as_flags: bool = False) -> LoadGenSettings:
    """`values` (field name -> value; None or absent = the default) as LoadGenSettings, or a UserError naming the
    flag (`as_flags`) or the [mlperf] key at fault and what it takes."""
    def name(key: str) -> str:
        return FLAGS[key] if as_flags else key

    fields = {f.name: f for f in dataclasses.fields(LoadGenSettings)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        import difflib

        guesses = [f"{k} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(k, fields, n=1)) else k
                   for k in unknown]
        raise UserError(f"unknown keys in [mlperf]: {', '.join(guesses)}; it takes {', '.join(fields)}")
    given = {k: v for k, v in values.items() if v is not None}
    for key, value in given.items():
        given[key] = typed(key, value, str(fields[key].type), fields[key].default)
    settings = LoadGenSettings(**given)
    if settings.scenario not in SCENARIOS:
        raise UserError(f"bad {name('scenario')} {settings.scenario!r}: choose {' or '.join(SCENARIOS)}")
    for key, least, inclusive, most, wanted in BOUNDS:
        value = getattr(settings, key)
        if value is not None and not ((value >= least if inclusive else value > least) and value <= most):  # NaN too
            shown = f"{name(key)} {value:g}" if as_flags else f"{key} = {value:g}"
            raise UserError(f"bad {shown}: give {wanted}")
    return settings


def check_scenario(config, loadgen: LoadGenSettings) -> None:
    """Refuse what an MLPerf run cannot be: one that writes videos, or SingleStream over data-parallel replicas
    (they serve Offline's batch, not one stream)."""
    if config.output != "none":
        raise UserError(f"output = {config.output!r}: an MLPerf run writes no video per query: drop it")
    if loadgen.scenario == "SingleStream" and config.parallel.dp > 1:
        raise UserError("SingleStream runs one sample at a time across all GPUs: data-parallel replicas (--dp) "
                        "are for Offline")
