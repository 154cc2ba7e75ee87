"""Implicit neural representations: networks that map coordinates to features."""

from metacompress.inr.siren import Siren

__all__ = ["Siren"]
