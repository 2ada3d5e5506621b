"""Walltimes in the forms users type, rendered in each scheduler's own format.

Accepted (the forms of Slurm's ``--time``, PBS's ``walltime`` and humans):

- ``90``          minutes (a bare number is minutes, as Slurm reads it)
- ``30:00``       minutes:seconds (Slurm's reading; PBS reads it the same way)
- ``01:30:00``    hours:minutes:seconds (hours may exceed 24: ``48:00:00``)
- ``1-00:00:00``  days-hours:minutes:seconds (also ``1-12`` and ``1-12:30``)
- ``90m``, ``1h30m``, ``2h``, ``1d12h``, ``45s``

One parse, two renderings: PBS wants ``HH:MM:SS`` (hours unbounded), Slurm
reads ``HH:MM:SS`` too but a day or more is clearer as ``D-HH:MM:SS``.
"""

from __future__ import annotations

import re

__all__ = ["WalltimeError", "format_walltime", "parse_walltime"]

FORMS = "90 (minutes), 30:00, 01:30:00, 1-00:00:00, 90m or 1h30m"

_UNIT_RE = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_DAYS_RE = re.compile(r"^(\d+)-(\d{1,2})(?::(\d{1,2}))?(?::(\d{1,2}))?$")


class WalltimeError(ValueError):
    """A walltime that cannot be read."""


def parse_walltime(value: str | int) -> int:
    """Seconds in ``value`` (see the module docstring for the forms)."""
    if isinstance(value, bool):
        raise WalltimeError(f"{value!r} is not a walltime: use {FORMS}")
    seconds = value * 60 if isinstance(value, int) else _parse_text(str(value).strip().lower())
    if seconds <= 0:
        raise WalltimeError(f"{value!r} is not a walltime: it must be more than zero")
    return seconds


def _parse_text(text: str) -> int:
    if not text:
        raise WalltimeError(f"'' is not a walltime: use {FORMS}")
    if text.isdigit():
        return int(text) * 60
    match = _DAYS_RE.match(text)
    if match:
        days, hours, minutes, secs = (int(g) if g else 0 for g in match.groups())
        _check_ranges(text, hours, 24, minutes, secs)
        return ((days * 24 + hours) * 60 + minutes) * 60 + secs
    if ":" in text:
        parts = text.split(":")
        if len(parts) > 3 or not all(p.isdigit() for p in parts):
            raise WalltimeError(f"{text!r} is not a walltime: use {FORMS}")
        nums = [int(p) for p in parts]
        if len(nums) == 2:  # MM:SS, as Slurm and PBS read it
            minutes, secs = nums
            if secs > 59:
                raise WalltimeError(f"{text!r} is not a walltime: seconds must be 0-59")
            return minutes * 60 + secs
        hours, minutes, secs = nums
        _check_ranges(text, hours, None, minutes, secs)
        return (hours * 60 + minutes) * 60 + secs
    match = _UNIT_RE.match(text)
    if match and any(match.groups()):
        d, h, m, s = (int(g) if g else 0 for g in match.groups())
        return ((d * 24 + h) * 60 + m) * 60 + s
    raise WalltimeError(f"{text!r} is not a walltime: use {FORMS}")


def _check_ranges(text: str, hours: int, max_hours: int | None, minutes: int, secs: int) -> None:
    if max_hours is not None and hours >= max_hours:
        raise WalltimeError(f"{text!r} is not a walltime: hours after the day must be 0-23")
    if minutes > 59 or secs > 59:
        raise WalltimeError(f"{text!r} is not a walltime: minutes and seconds must be 0-59")


def format_walltime(seconds: int, scheduler: str = "pbs") -> str:
    """``HH:MM:SS`` (PBS, and Slurm under a day) or ``D-HH:MM:SS`` (Slurm, a day or more)."""
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    if scheduler == "slurm" and hours >= 24:
        days, hours = divmod(hours, 24)
        return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{hours:02d}:{minutes:02d}:{secs:02d}"
