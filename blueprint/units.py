"""Byte sizes, named once: limits, memory figures and transfer amounts are given in MiB."""

from __future__ import annotations

MIB = 1024 * 1024
