"""Errors the store reports. Each renders as one line a user can act on."""
from __future__ import annotations


class StoreError(Exception):
    """Base class of every error the store raises on purpose."""


class InvalidName(StoreError, ValueError):
    """A snapshot id or object key that is not safe to use (path-like, empty, too long...)."""


class NotFound(StoreError, KeyError):
    """No such snapshot or object."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "not found"


class AlreadyExists(StoreError):
    """An object or snapshot that must be new already exists."""


class CorruptData(StoreError):
    """Stored bytes do not match their checksum, are truncated, or cannot be decoded."""


class BadImage(StoreError):
    """The image directory given to `put_image` is not a complete, intact engine image."""


class LockTimeout(StoreError):
    """The store lock could not be taken in the time allowed."""
