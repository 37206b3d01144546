"""The one table of sampling settings: each field's type, default, bounds, request names and flag.

`SamplingSettings` is the table, written as a dataclass: every field is declared once, here,
with `setting(...)`. From it come
- `GenerationParams` (it inherits these fields) and their validation (`check`);
- the server's request parser (helios_http.schemas reads each setting by its request names);
- the `generate` command's flags and their help (helios_cli.generate).
A setting added here appears on all three, and tests/test_sampling_params.py proves they agree.

Fields that are lists or need the model's vocabulary (stop strings, stop_token_ids,
logit_bias, DRY's breakers) and the output limit (whose request name differs from family
to family) are not settings of the chain: GenerationParams declares them itself.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

# One default everywhere (make_sampler, GenerationParams, the server, the CLI): OpenAI's API
# samples at 1.0 when a request names no temperature, and its clients expect the same here.
DEFAULT_TEMPERATURE = 1.0

_INT_MAX = 1 << 20  # a bound for counts that have none of their own, far above any real use


class SettingError(ValueError):
    """A setting out of its bounds; `name` is the setting's (GenerationParams') name."""

    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.name = name


@dataclass(frozen=True)
class Setting:
    """One row of the table."""

    name: str  # GenerationParams' name
    kind: type  # int or float (a float setting takes an int too)
    default: Any
    low: float | None  # inclusive, unless low_open
    high: float | None  # inclusive
    low_open: bool
    choices: tuple[int, ...] | None  # the only values allowed, where the bounds say too little
    request: tuple[str, ...]  # the names a request body may give it by, the first preferred
    flags: tuple[str, ...]  # the `generate` command's flags for it
    help: str

    def check(self, value: Any, called: str | None = None) -> None:
        """Raise SettingError (naming this setting, or `called`: the name it was given by) unless `value` is allowed."""
        name = called or self.name
        if value is None and self.default is None:
            return
        if self.kind is int and (not isinstance(value, numbers.Integral) or isinstance(value, bool)):
            raise SettingError(self.name, f"{name} must be an integer; got {value!r}")
        if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
            raise SettingError(self.name, f"{name} must be a finite number; got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise SettingError(self.name, f"{name} must be {_listed(self.choices)}; got {value} ({self.help})")
        low_ok = self.low is None or (value > self.low if self.low_open else value >= self.low)
        if not low_ok or (self.high is not None and value > self.high):
            raise SettingError(self.name, f"{name} must be {self.bounds()}; got {value}")

    def bounds(self) -> str:
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low}, {self.high}]"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low}"
        return f"<= {self.high}" if self.high is not None else "a number"


def setting(
    default: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    flags: tuple[str, ...],
    help: str,
    request: tuple[str, ...] = (),
    low_open: bool = False,
    choices: tuple[int, ...] | None = None,
) -> Any:
    """A field of the table: its default, and what the other surfaces need in its metadata."""
    row = {"low": low, "high": high, "low_open": low_open, "choices": choices, "request": request, "flags": flags}
    return field(default=default, metadata={"setting": {**row, "help": help}})


@dataclass
class SamplingSettings:
    """The built-in sampler chain's and penalties' settings, with their bounds (see `SETTINGS`).

    Off values: top_k 0, top_p 1, min_p 0, typical_p 1, top_n_sigma <= 0, xtc_probability 0,
    mirostat 0, the penalties 1 (repetition) and 0 (the others), dry_multiplier 0.
    temperature 0, or top_p 0 (the smallest nucleus), is greedy.
    """

    # No upper bound, as llama-server and vLLM (OpenAI's API stops at 2): a hot temperature is a research tool.
    temperature: float = setting(
        DEFAULT_TEMPERATURE, 0.0, None, flags=("--temperature", "--temp"), help="sampling temperature; 0 is greedy"
    )
    top_k: int = setting(0, 0, None, flags=("--top-k",), help="keep the k most likely tokens; 0 is off")
    top_p: float = setting(
        1.0,
        0.0,
        1.0,
        flags=("--top-p",),
        help="keep the most likely tokens up to this probability mass; 1 is off, 0 greedy",
    )
    min_p: float = setting(
        0.0, 0.0, 1.0, flags=("--min-p",), help="drop tokens less likely than this fraction of the top one; 0 is off"
    )
    typical_p: float = setting(
        1.0, 0.0, 1.0, low_open=True, flags=("--typical-p", "--typical"), help="locally typical sampling mass; 1 is off"
    )
    top_n_sigma: float = setting(
        0.0, -1.0, 100.0, flags=("--top-n-sigma",), help="keep logits within n deviations of the top one; <= 0 is off"
    )
    xtc_probability: float = setting(
        0.0, 0.0, 1.0, flags=("--xtc-probability",), help="chance per token that XTC cuts the top; 0 is off"
    )
    xtc_threshold: float = setting(
        0.1, 0.0, 1.0, flags=("--xtc-threshold",), help="XTC cuts all but the least likely token above this"
    )
    mirostat: int = setting(
        0,
        choices=(0, 2),
        flags=("--mirostat",),
        help="0 is off; 2: Mirostat 2.0 replaces the filters above (version 1 is not built in)",
    )
    mirostat_tau: float = setting(
        5.0, 0.0, 100.0, flags=("--mirostat-tau", "--mirostat-ent"), help="Mirostat's target surprise, in bits"
    )
    mirostat_eta: float = setting(
        0.1, 0.0, 1.0, flags=("--mirostat-eta", "--mirostat-lr"), help="Mirostat's learning rate"
    )
    repetition_penalty: float = setting(
        1.0,
        0.01,
        100.0,
        request=("repeat_penalty", "repetition_penalty"),  # llama-server's name, then vLLM's
        flags=("--repeat-penalty",),
        help="penalise tokens already in the text; 1 is off",
    )
    presence_penalty: float = setting(
        0.0, -2.0, 2.0, flags=("--presence-penalty",), help="subtract this from tokens already generated (OpenAI's)"
    )
    frequency_penalty: float = setting(
        0.0, -2.0, 2.0, flags=("--frequency-penalty",), help="subtract this per earlier occurrence (OpenAI's)"
    )
    dry_multiplier: float = setting(
        0.0, 0.0, 100.0, flags=("--dry-multiplier",), help="DRY repetition penalty strength; 0 is off"
    )
    dry_base: float = setting(1.75, 1.0, 100.0, flags=("--dry-base",), help="DRY's growth per repeated token")
    dry_allowed_length: int = setting(
        2, 0, _INT_MAX, flags=("--dry-allowed-length",), help="repeats up to this long go unpenalised by DRY"
    )
    dry_penalty_last_n: int = setting(
        64, 0, _INT_MAX, flags=("--dry-penalty-last-n",), help="tokens DRY looks back over"
    )
    min_tokens: int = setting(
        0, 0, None, flags=("--min-tokens",), help="no end-of-generation token before this many tokens"
    )
    seed: int | None = setting(
        None, flags=("--seed", "-s"), help="random seed for reproducible sampling (default: a fresh one per run)"
    )

    def __post_init__(self):
        check(self)
        if self.top_p == 0:
            # The smallest nucleus there is: the single most likely token.
            self.temperature, self.top_p = 0.0, 1.0


def check(settings: Any) -> None:
    """Raise SettingError for the first of `settings`' table fields that is out of bounds."""
    for row in SETTINGS:
        row.check(getattr(settings, row.name))


def _table() -> tuple[Setting, ...]:
    kinds = {"float": float, "int": int, "int | None": int}
    rows = []
    for f in fields(SamplingSettings):
        meta = dict(f.metadata["setting"])
        meta["request"] = meta["request"] or (f.name,)
        assert f.default is not MISSING
        rows.append(Setting(name=f.name, kind=kinds[f.type], default=f.default, **meta))
    return tuple(rows)


def _listed(values: tuple) -> str:
    return ", ".join(map(str, values[:-1])) + f" or {values[-1]}"


SETTINGS: tuple[Setting, ...] = _table()
SETTINGS_BY_NAME: dict[str, Setting] = {row.name: row for row in SETTINGS}
