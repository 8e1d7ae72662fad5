"""Errors the allocator raises; every message names the object and the field it is about."""

from __future__ import annotations


class AllocatorError(ValueError):
    """Base class of everything the allocator library raises."""


class ParseError(AllocatorError):
    """An API object could not be understood, e.g. a malformed quantity or a missing required field."""


class SelectorError(AllocatorError):
    """A CEL selector failed to compile or to evaluate for one device."""


class PolicyError(AllocatorError):
    """An unknown policy name was asked for."""
