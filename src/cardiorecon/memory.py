"""Peak resident memory of this process while a block runs (every method's and case's cost column)."""

from __future__ import annotations

import os
import threading


class PeakMemory:
    """Peak resident memory (MB) of this process while the block runs (sampled at 50 Hz)."""

    def __init__(self):
        self.peak_mb = 0.0
        self._stop = threading.Event()

    @staticmethod
    def rss_mb() -> float:
        try:
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except OSError:
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def _watch(self):
        while not self._stop.wait(0.02):
            self.peak_mb = max(self.peak_mb, self.rss_mb())

    def __enter__(self):
        self.peak_mb = self.rss_mb()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self.rss_mb())


__all__ = ["PeakMemory"]
