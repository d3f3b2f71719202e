"""Headless Chromium driven through the DevTools protocol, for the report's
interaction tests: real mouse clicks at page coordinates, scripts evaluated
in the page, and every console message and uncaught exception collected.

`scripts/test` installs Debian's chromium when it is missing
(scripts/install-chromium); tests skip without one (`CHROMIUM` is None).
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import tempfile
import urllib.request
from typing import Any, Dict, List, Optional

from websockets.sync.client import connect

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


class Browser:
  """One headless Chromium with one page; use as a context manager.

  Attributes:
    console: each console message and uncaught exception, as
      `(level, text)`, since the page was opened.
  """

  def __init__(self, width: int = 1200, height: int = 900,
               timeout: float = 60.0):
    self._profile = tempfile.TemporaryDirectory(ignore_cleanup_errors=True)
    self._process = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-dev-shm-usage", "--disable-background-networking",
         "--disable-extensions", "--no-first-run", "--remote-debugging-port=0",
         f"--user-data-dir={self._profile.name}",
         f"--window-size={width},{height}", "about:blank"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    endpoint = None
    for line in self._process.stderr:
      found = _LISTENING.search(line)
      if found:
        endpoint = found.group(1)
        break
    if endpoint is None:
      self.close()
      raise RuntimeError("chromium printed no DevTools address")
    port = re.search(r":(\d+)/", endpoint).group(1)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as r:
      page = next(t for t in json.load(r) if t["type"] == "page")
    self._socket = connect(page["webSocketDebuggerUrl"], max_size=None,
                           open_timeout=timeout)
    self._timeout = timeout
    self._ids = itertools.count(1)
    self._events: List[Dict[str, Any]] = []
    self.console: List[tuple] = []
    for domain in ("Page", "Runtime", "Log"):
      self.send(f"{domain}.enable")

  def __enter__(self) -> "Browser":
    return self

  def __exit__(self, *unused) -> None:
    self.close()

  def close(self) -> None:
    if getattr(self, "_socket", None) is not None:
      self._socket.close()
    self._process.kill()
    self._process.wait()
    self._process.stderr.close()
    self._profile.cleanup()

  def send(self, method: str, **params) -> Dict[str, Any]:
    """Calls a DevTools method; its result."""
    call_id = next(self._ids)
    self._socket.send(json.dumps({"id": call_id, "method": method,
                                  "params": params}))
    while True:
      message = self._receive()
      if message.get("id") == call_id:
        if "error" in message:
          raise RuntimeError(f"{method}: {message['error']}")
        return message["result"]

  def _receive(self) -> Dict[str, Any]:
    message = json.loads(self._socket.recv(timeout=self._timeout))
    method = message.get("method")
    if method == "Runtime.consoleAPICalled":
      params = message["params"]
      self.console.append((params["type"], " ".join(
          str(a.get("value", a.get("description", ""))) for a in
          params["args"])))
    elif method == "Runtime.exceptionThrown":
      details = message["params"]["exceptionDetails"]
      self.console.append(("exception", details.get("exception", {}).get(
          "description", details.get("text"))))
    elif method == "Log.entryAdded":
      entry = message["params"]["entry"]
      self.console.append((entry["level"], entry["text"]))
    elif method:
      self._events.append(message)
    return message

  def open(self, url: str) -> None:
    """Opens `url` and waits for its load event."""
    self._events.clear()
    self.send("Page.navigate", url=url)
    while not any(e["method"] == "Page.loadEventFired" for e in self._events):
      self._receive()

  def evaluate(self, expression: str) -> Any:
    """The value of a JavaScript expression in the page (awaited when it is
    a promise)."""
    result = self.send("Runtime.evaluate", expression=expression,
                       returnByValue=True, awaitPromise=True)
    if "exceptionDetails" in result:
      raise RuntimeError(result["exceptionDetails"])
    return result["result"].get("value")

  def click(self, x: float, y: float) -> None:
    """A left click at viewport coordinates, as a mouse makes it."""
    for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
      self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y,
                button="left" if kind != "mouseMoved" else "none",
                clickCount=1 if kind != "mouseMoved" else 0)

  def click_element(self, selector: str) -> None:
    """Scrolls the first element matching `selector` into view and clicks
    its centre."""
    box = self.evaluate(
        f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
        " e.scrollIntoView({block: 'center'});"
        " const r = e.getBoundingClientRect();"
        " return [r.x + r.width / 2, r.y + r.height / 2]; })()")
    self.click(*box)

  def errors(self) -> List[tuple]:
    """The console messages at warning level or worse, and exceptions."""
    return [(level, text) for level, text in self.console
            if level in ("error", "warning", "warn", "assert", "exception")]


def open_page(path, **kwargs) -> Optional[Browser]:
  """A `Browser` showing the local file `path`."""
  browser = Browser(**kwargs)
  browser.open(f"file://{path}")
  return browser


# The flagged rows table as shown: its headers, and the cells' text of each
# row of the page on screen.
SHOWN_ROWS = """(() => {
  const table = document.getElementById("flagged");
  const box = table.getBoundingClientRect();
  return {
    head: Array.from(table.querySelectorAll(".tabulator-col-title"),
                     c => c.textContent),
    visible: box.width > 0 && box.height > 0,
    rows: Array.from(table.querySelectorAll(".tabulator-row"),
                     r => Array.from(r.querySelectorAll(".tabulator-cell"),
                                     c => c.textContent))};
})()"""
