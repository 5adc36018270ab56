"""``logging.getLogger("workbench")`` records cache hits and misses and each analysis' device and threads; the
library adds no handler of its own (NullHandler only)."""

from __future__ import annotations

import logging

import workbench as wb


def test_hits_misses_device_and_threads_are_logged(tiny_llama, tmp_path, caplog):
    with caplog.at_level(logging.DEBUG, logger="workbench"):
        wb.model_overview(tiny_llama, cache=wb.ResultCache(tmp_path))
        wb.model_overview(tiny_llama, cache=wb.ResultCache(tmp_path))  # a new process, in effect: from disk
        cache = wb.ResultCache(tmp_path)
        wb.model_overview(tiny_llama, cache=cache)
        wb.model_overview(tiny_llama, cache=cache)  # from memory
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("workbench")]
    assert sum(m.startswith("cache miss: overview") for m in messages) == 1
    assert sum(m.startswith("cache hit (disk): overview") for m in messages) == 2
    assert sum(m.startswith("cache hit (memory)") for m in messages) == 1
    (ran,) = [m for m in messages if " CPU threads" in m]
    assert ran.startswith("overview on tiny-llama: device cpu, ") and ran.split(", ")[1].split()[0].isdigit()


def test_the_library_adds_no_handler():
    loggers = [logging.getLogger(name) for name in logging.root.manager.loggerDict if name.startswith("workbench")]
    handlers = [h for logger in loggers for h in logger.handlers]
    assert handlers and all(type(h) is logging.NullHandler for h in handlers)
    assert not any(type(h).__module__.startswith("workbench") for h in logging.getLogger().handlers)
