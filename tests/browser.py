"""Headless Chromium for the page tests (standard library only): open a page, let its scripts run, and
return the DOM after them, the requests the page made (from Chromium's net log) and the wall time.

CI installs `chromium` (.ci/run); where it is missing the browser tests skip, except under CI=true,
where they fail (a browser test that silently skips checks nothing)."""

from __future__ import annotations

import json
import re
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-default-apps", "--no-pings", "--disable-domain-reliability",
         "--disable-features=Translate,OptimizationHints,MediaRouter,SpellCheck",
         "--host-resolver-rules=MAP * ~NOTFOUND",  # the browser's own background requests go nowhere
         "--window-size=1200,1600", "--hide-scrollbars"]


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def page_requests(net_log: Path) -> list[str]:
    """URLs the page itself asked for (not the browser's own background requests, whose initiator is
    "not an origin"), from a net log; read event by event (one per line), so a log that the browser left
    unclosed still reads."""
    if not net_log.is_file():
        return []
    urls = set()
    for line in net_log.read_text(errors="replace").splitlines():
        line = line.strip().rstrip(",")
        if '"url"' not in line:
            continue
        try:
            e = json.loads(line)
        except json.JSONDecodeError:
            continue
        p = e.get("params") if isinstance(e, dict) else None
        if isinstance(p, dict) and "url" in p and "initiator" in p and p["initiator"] != "not an origin":
            urls.add(p["url"])
    return sorted(urls)


def open_page(path: Path, budget_ms: int = 30000, timeout_s: int = 150, extra: list[str] | None = None,
              screenshot: Path | None = None) -> dict:
    """{"dom": DOM after the scripts, "requests": URLs the page requested, "seconds": wall time}."""
    exe = chromium()
    if exe is None:
        raise RuntimeError("chromium not found")
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "net.json"
        args = [exe, *FLAGS, *(extra or []), f"--user-data-dir={tmp}/profile", f"--virtual-time-budget={budget_ms}",
                f"--log-net-log={log}"]
        args += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
        t0 = time.perf_counter()
        res = subprocess.run(args + [Path(path).resolve().as_uri()], capture_output=True, text=True, timeout=timeout_s,
                             env={**os.environ, "HOME": tmp})
        seconds = time.perf_counter() - t0
        requests = [u for u in page_requests(log) if not u.startswith(("file:", "data:", "blob:", "chrome"))]
    return {"dom": res.stdout, "requests": requests, "seconds": seconds, "stderr": res.stderr}


def attr(dom: str, name: str, element: str = "nv-viewer") -> str | None:
    """An attribute of the first element of class `element` in a dumped DOM."""
    m = re.search(r"<div class=\"" + element + r"\"[^>]*>", dom)
    if not m:
        return None
    a = re.search(name + r"=\"([^\"]*)\"", m.group(0))
    return None if a is None else a.group(1)
