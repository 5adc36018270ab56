"""Persistent, content-addressed result cache (safetensors + JSON) with an in-memory layer."""

from .store import ResultCache, cache_key, clear_cache, get_cache

__all__ = ["ResultCache", "cache_key", "clear_cache", "get_cache"]
