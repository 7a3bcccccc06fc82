"""Number types for the command line's options (hand-written plumbing): a value outside its range is
refused by argparse before any work starts, with the option's name and the range in the message.

    parser.add_argument("--lr", type=number(float, above=0))       # p2p train: error: argument --lr:
                                                                     #   must be more than 0, got -1
"""
from __future__ import annotations

import argparse
import math

__all__ = ["number", "count_or_inf"]


def _range(minimum, above, below, maximum) -> str:
    parts = ([f"at least {minimum}"] if minimum is not None else []) + ([f"more than {above}"] if above is not None else [])
    parts += ([f"less than {below}"] if below is not None else []) + ([f"at most {maximum}"] if maximum is not None else [])
    return " and ".join(parts)


def number(kind=int, minimum=None, *, above=None, below=None, maximum=None):
    """An argparse `type`: the text as `kind` (int or float), finite (no nan, no inf), within the bounds:
    >= minimum, > above, < below, <= maximum (each optional)."""
    what = "an integer" if kind is int else "a number"
    bounds = _range(minimum, above, below, maximum)

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}" + (f" ({bounds})" if bounds else "") + f", got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number" + (f" ({bounds})" if bounds else "") + f", got {text}")
        if ((minimum is not None and value < minimum) or (above is not None and value <= above)
                or (below is not None and value >= below) or (maximum is not None and value > maximum)):
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in some messages
    return parse


def count_or_inf(text: str) -> float:
    "A positive integer, or inf / infinity (no limit): --max_dataset_size."
    if str(text).strip().lower() in ("inf", "infinity"):
        return float("inf")
    return number(int, 1)(text)
