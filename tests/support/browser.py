"""Open a page in headless Chromium (Debian's `chromium`) through the DevTools protocol and say
what a reader would see: images that did not load, internal links that lead nowhere, console
errors and uncaught exceptions; click table headings; take a screenshot.

    python tests/support/browser.py results/example-quick/report.html docs/report.png

Used by tests/test_report_browser.py. Needs the `chromium` binary and `websocket-client`.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BINARIES = ("chromium", "chromium-browser", "google-chrome")
TIMEOUT_S = 30.0

# Run in the page once it has loaded: what did not load and which links lead nowhere.
CHECK_PAGE = """(() => {
  const images = Array.from(document.images);
  const broken = images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src);
  const hrefs = Array.from(document.querySelectorAll('a[href^="#"]'))
    .map(a => a.getAttribute('href'));
  const dangling = hrefs.filter(h => !document.getElementById(decodeURIComponent(h.slice(1))));
  const files = Array.from(document.querySelectorAll('a[href]:not([href^="#"])'))
    .map(a => a.href);
  return {images: images.length, broken, links: hrefs.length, dangling, files,
          tables: document.querySelectorAll('table.sortable').length};
})()"""


def find_chromium() -> str | None:
    for name in BINARIES:
        found = shutil.which(name)
        if found:
            return found
    return None


class Page:
    """One open page: `evaluate(js)`, `events` (console messages, exceptions, log entries)."""

    def __init__(self, socket: Any) -> None:
        self.socket, self.next_id, self.events = socket, 0, []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)
        raise TimeoutError(method)

    def wait_for(self, event: str) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while not any(e.get("method") == event for e in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(event)
            self.events.append(json.loads(self.socket.recv()))

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:60]}…: {result['exceptionDetails']}")
        return result["result"].get("value")

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries, one line each."""
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append(" ".join(str(a.get("value", a)) for a in params.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                found.append(str(params.get("exceptionDetails", {}).get("text")))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                entry = params["entry"]
                found.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}")
        return found

    def screenshot(self, out: Path, *, width: int = 1280, height: int = 900) -> Path:
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        data = self.call("Page.captureScreenshot", format="png")["data"]
        Path(out).write_bytes(base64.b64decode(data))
        return Path(out)


def _port(profile: Path, process: subprocess.Popen) -> int:
    deadline = time.monotonic() + TIMEOUT_S
    marker = profile / "DevToolsActivePort"
    while not marker.is_file() or not marker.read_text().strip():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"chromium did not start (exit {process.poll()})")
        time.sleep(0.05)
    return int(marker.read_text().splitlines()[0])


@contextmanager
def open_page(path: Path, *, binary: str | None = None) -> Iterator[Page]:
    """`path` (an HTML file) loaded in a fresh headless Chromium, console events recorded from
    before the load; the browser is ended afterwards."""
    import websocket

    binary = binary or find_chromium()
    if binary is None:
        raise RuntimeError("no chromium binary")
    with tempfile.TemporaryDirectory() as profile:
        args = [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run"]
        args += [f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"]
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            port = _port(Path(profile), process)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                target = next(t for t in json.load(r) if t.get("type") == "page")
            socket = websocket.create_connection(target["webSocketDebuggerUrl"], timeout=10)
            page = Page(socket)
            for domain in ("Page", "Runtime", "Log"):
                page.call(f"{domain}.enable")
            page.call("Page.navigate", url=Path(path).resolve().as_uri())
            page.wait_for("Page.loadEventFired")
            yield page
            socket.close()
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


if __name__ == "__main__":
    with open_page(Path(sys.argv[1])) as page:
        print(json.dumps(page.evaluate(CHECK_PAGE)), page.errors())
        print(page.screenshot(Path(sys.argv[2])))
