#!/usr/bin/python3
"""Load every page of a built HTML site in headless Chromium and report what is broken.

    tests/book/browser.py [--screenshots DIR] build/book/html

The site is served from a local HTTP server on 127.0.0.1; Debian's ``chromium``
loads each page through its DevTools protocol (driven with a small WebSocket
client written here with the standard library). A page fails on:

* a broken image (not loaded, or loaded with no pixels);
* a request that failed or answered 4xx/5xx (stylesheets, scripts, fonts, ...);
* a request to any host other than the local server (nothing may leave it);
* a JavaScript exception or a console error;
* a link to a page or file of the site that does not exist, or to an anchor
  that the target page does not have;
* math that MathJax could not typeset (an error, an undefined macro);
* a chunk line over 88 columns;
* the same admonition twice on a page (a chapter's "Build, run and test" box, say);
* a figure narrower than 300 px in a 1400 px window, or without its number, or
  without its links to the code that drew it and to its data.

Prints one line per problem and a summary; exits 1 if there is any problem.
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.server
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = "chromium"
WIDTH = 1400              # a desktop window, in CSS pixels
PHONE = 400               # a phone's width, for screenshots of chapters
COLUMNS = 88              # the longest chunk line the page shows without scrolling
MIN_FIGURE_WIDTH = 300    # narrower, a figure's labels cannot be read
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-extensions", "--disable-default-apps",
         "--no-default-browser-check", "--mute-audio", "--hide-scrollbars", "--metrics-recording-only",
         "--disable-features=Translate,MediaRouter,OptimizationHints,AutofillServerCommunication",
         # Belt and braces: even if a page asked for another host, no name would resolve.
         "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
         # Pages load side by side in several tabs: none of them may be throttled as "in the background".
         "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
         "--disable-backgrounding-occluded-windows",
         "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
         "--window-size=1400,900"]

# Runs in each page once it has loaded (and MathJax has typeset it): its ids, its links, its broken
# images, and what the book promises of its pages (math, chunk lines, boxes, figures).
INSPECT = """(() => {
  const ids = Array.from(document.querySelectorAll('[id]'), e => e.id)
    .concat(Array.from(document.querySelectorAll('a[name]'), e => e.getAttribute('name')));
  const links = Array.from(document.querySelectorAll('a[href]'), a => a.href);
  const images = Array.from(document.images)
    .filter(im => !(im.complete && im.naturalWidth > 0))
    .map(im => im.currentSrc || im.src || im.getAttribute('src') || '(no src)');
  // MathJax 2: an error (noErrors shows the TeX in .mjx-noError), a processing error, or an
  // undefined macro (noUndefined draws it in red).
  const math = Array.from(document.querySelectorAll(
      '.MathJax_CHTML .merror, .MathJax .merror, .mjx-merror, .mjx-noError, .MathJax_Error'),
      e => e.textContent.slice(0, 80))
    .concat(Array.from(document.querySelectorAll('.MathJax_CHTML [style*="color: red"]'),
                       e => 'undefined: ' + e.textContent.slice(0, 80)));
  const expand = line => Array.from(line).reduce(
    (out, c) => out + (c === '\\t' ? ' '.repeat(8 - Array.from(out).length % 8) : c), '');
  const long = [];
  for (const pre of document.querySelectorAll('div.chunk-code pre')) {
    const name = pre.closest('div.chunk')?.querySelector('.chunk-name')?.textContent || '?';
    pre.textContent.replace(/\\n$/, '').split('\\n').forEach((line, k) => {
      const width = Array.from(expand(line)).length;
      if (width > %(columns)d) long.push(`${name} line ${k + 1}: ${width} columns`);
    });
  }
  const seen = new Map(), boxes = [];
  for (const box of document.querySelectorAll('.admonition')) {
    const title = box.querySelector('.admonition-title')?.textContent.trim() || '';
    const key = /^Build, run and test/.test(title) ? title : title + '\\n' + box.textContent.trim();
    if (seen.has(key)) boxes.push(title || box.textContent.trim().slice(0, 60));
    seen.set(key, true);
  }
  const figures = Array.from(document.querySelectorAll('article figure, article div.figure'), (figure, k) => {
    const img = figure.querySelector('img, object, svg');
    return {name: img ? (img.getAttribute('src') || img.getAttribute('data') || 'svg').split('/').pop()
                      : `figure ${k + 1}`,
            width: img ? Math.round(img.getBoundingClientRect().width) : 0,
            number: !!figure.querySelector('.caption-number'),
            code: !!figure.querySelector('a.figure-code'),
            data: !!figure.querySelector('a.figure-data')};
  });
  return JSON.stringify({ids, links, images, math, long, boxes, figures});
})()""".replace("%(columns)d", str(COLUMNS))


# Resolves once MathJax (if the page has it) has typeset everything.
MATHJAX_DONE = """(() => (window.MathJax && window.MathJax.Hub && window.MathJax.Hub.Queue)
  ? Promise.race([new Promise(done => window.MathJax.Hub.Queue(() => done(true))),
                  new Promise(done => setTimeout(() => done(false), 15000))]) : true)()"""


@dataclass(frozen=True)
class Problem:
    page: str     # path of the page under the site's root
    kind: str     # "image", "request", "external", "javascript", "link", "anchor", "math",
                  # "chunk-line", "admonition", "figure"
    detail: str

    def __str__(self) -> str:
        return f"{self.page}: {self.kind}: {self.detail}"


@dataclass
class PageReport:
    ids: set[str] = field(default_factory=set)
    links: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- a minimal WebSocket client

class WebSocket:
    """Just enough of RFC 6455 for the DevTools protocol: text frames, ping, close."""

    def __init__(self, url: str, timeout: float = 30.0):
        parsed = urllib.parse.urlparse(url)
        self.sock = socket.create_connection((parsed.hostname, parsed.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (f"GET {parsed.path} HTTP/1.1\r\nHost: {parsed.hostname}:{parsed.port}\r\n"
                   f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                   f"Sec-WebSocket-Version: 13\r\n\r\n")
        self.sock.sendall(request.encode())
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("DevTools closed the connection during the handshake")
            response += chunk
        head, self.buffer = response.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"DevTools refused the WebSocket: {head.decode(errors='replace')}")

    def send(self, text: str) -> None:
        payload = text.encode()
        header = bytearray([0x81])
        n = len(payload)
        if n < 126:
            header.append(0x80 | n)
        elif n < 1 << 16:
            header.append(0x80 | 126)
            header += struct.pack("!H", n)
        else:
            header.append(0x80 | 127)
            header += struct.pack("!Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes(header) + mask + masked)

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buffer)))
            if not chunk:
                raise ConnectionError("DevTools closed the connection")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def receive(self, timeout: float) -> str | None:
        """The next text message, or None if none arrives within ``timeout`` seconds."""
        self.sock.settimeout(timeout)
        message = b""
        try:
            while True:
                first, second = self._read(2)
                opcode, n = first & 0x0F, second & 0x7F
                if n == 126:
                    n = struct.unpack("!H", self._read(2))[0]
                elif n == 127:
                    n = struct.unpack("!Q", self._read(8))[0]
                mask = self._read(4) if second & 0x80 else None
                payload = self._read(n)
                if mask:
                    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                if opcode == 0x8:
                    raise ConnectionError("DevTools closed the WebSocket")
                if opcode == 0x9:
                    self._pong(payload)
                    continue
                if opcode in (0x1, 0x0, 0x2):
                    message += payload
                    if first & 0x80:
                        return message.decode()
        except socket.timeout:
            if message:
                raise
            return None

    def _pong(self, payload: bytes) -> None:
        mask = os.urandom(4)
        self.sock.sendall(bytes([0x8A, 0x80 | len(payload)]) + mask +
                          bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class DevTools:
    """Commands and events of the Chromium DevTools protocol over one WebSocket."""

    def __init__(self, url: str):
        self.ws = WebSocket(url)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict:
        self.next_id += 1
        ident = self.next_id
        message = {"id": ident, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"DevTools did not answer {method} within {timeout} s")
            text = self.ws.receive(left)
            if text is None:
                continue
            reply = json.loads(text)
            if reply.get("id") == ident:
                if "error" in reply:
                    raise RuntimeError(f"DevTools {method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def pump(self, timeout: float) -> None:
        """Collect the events that arrive within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            text = self.ws.receive(left)
            if text is None:
                return
            message = json.loads(text)
            if "method" in message:
                self.events.append(message)

    def take(self) -> list[dict]:
        events, self.events = self.events, []
        return events


# ---------------------------------------------------------------- the local server and the browser

class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


class LocalServer:
    """A static server for ``root`` on 127.0.0.1, on a free port, in a thread."""

    def __init__(self, root: Path):
        handler = functools.partial(QuietHandler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Tab:
    """One page session of the browser and the state of the page it is loading."""

    def __init__(self, browser: "Browser", session: str):
        self.browser, self.session = browser, session
        self.page: str | None = None
        self.reset()

    def reset(self) -> None:
        self.events: list[dict] = []
        self.loaded = self.idle = False
        self.pending: dict[str, str] = {}
        self.quiet_since: float | None = None
        self.started = time.monotonic()

    def call(self, method: str, params: dict | None = None, timeout: float = 30.0) -> dict:
        return self.browser.devtools.call(method, params, self.session, timeout)

    def start(self, page: str, url: str) -> None:
        self.page = page
        self.reset()
        self.call("Page.navigate", {"url": url})

    def note(self, event: dict) -> None:
        self.events.append(event)
        method, params = event["method"], event.get("params", {})
        if method == "Page.loadEventFired":
            self.loaded = True
        elif method == "Page.lifecycleEvent" and params.get("name") == "networkIdle":
            self.idle = True
        elif method == "Network.requestWillBeSent":
            self.pending[params["requestId"]] = params["request"]["url"]
        elif method in ("Network.loadingFinished", "Network.loadingFailed"):
            self.pending.pop(params["requestId"], None)

    def settled(self, timeout: float) -> bool:
        """Loaded, and the network quiet (Chromium says so, or nothing pending for a moment)."""
        now = time.monotonic()
        if self.loaded and (self.idle or not self.pending):
            if self.idle:
                return True
            self.quiet_since = self.quiet_since or now
            if now - self.quiet_since >= 0.25:
                return True
        else:
            self.quiet_since = None
        if now - self.started > timeout:
            self.events.append({"method": "check.timeout",
                                "params": {"loaded": self.loaded, "pending": sorted(self.pending.values())}})
            return True
        return False

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"could not inspect {self.page}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")


class Browser:
    """Headless Chromium with a fresh profile, driven through a few page sessions at once."""

    def __init__(self, tabs: int = 2):
        if shutil.which(CHROMIUM) is None:
            raise RuntimeError("chromium is not installed ('make deps' installs it)")
        self.profile = tempfile.mkdtemp(prefix="book-chromium-")
        self.process = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={self.profile}",
                                         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
                                         "about:blank"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.tabs: list[Tab] = []
        try:
            self.devtools = DevTools(self._browser_url())
            for _ in range(tabs):
                target = self.devtools.call("Target.createTarget", {"url": "about:blank"})["targetId"]
                session = self.devtools.call("Target.attachToTarget",
                                             {"targetId": target, "flatten": True})["sessionId"]
                tab = Tab(self, session)
                for domain in ("Page", "Network", "Runtime", "Log"):
                    tab.call(f"{domain}.enable")
                tab.call("Page.setLifecycleEventsEnabled", {"enabled": True})
                tab.call("Emulation.setDeviceMetricsOverride",
                         {"width": WIDTH, "height": 900, "deviceScaleFactor": 1, "mobile": False})
                self.tabs.append(tab)
        except BaseException:
            self.close()
            raise

    def _browser_url(self) -> str:
        active = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"chromium exited with status {self.process.returncode} at start")
            if active.is_file():
                lines = active.read_text().split("\n")
                if len(lines) >= 2 and lines[1]:
                    return f"ws://127.0.0.1:{lines[0].strip()}{lines[1].strip()}"
            time.sleep(0.05)
        raise RuntimeError("chromium did not open its DevTools port within 30 s")

    def dispatch(self, wait: float) -> None:
        """Hand the events that arrived (waiting up to ``wait`` seconds) to their tabs."""
        self.devtools.pump(wait)
        by_session = {tab.session: tab for tab in self.tabs}
        for event in self.devtools.take():
            tab = by_session.get(event.get("sessionId"))
            if tab is not None and tab.page is not None:
                tab.note(event)

    def visit(self, pages: list[tuple[str, str]], on_loaded, timeout: float = 20.0) -> None:
        """Load every (page, url), a few at a time; call ``on_loaded(tab)`` once each has settled."""
        waiting = list(pages)
        busy: list[Tab] = []
        for tab in self.tabs:
            tab.page = None
        while waiting or busy:
            for tab in self.tabs:
                if tab not in busy and waiting:
                    page, url = waiting.pop(0)
                    tab.start(page, url)
                    busy.append(tab)
            self.dispatch(0.05)
            for tab in list(busy):
                if tab.settled(timeout):
                    self.dispatch(0)
                    on_loaded(tab)
                    busy.remove(tab)
                    tab.page = None

    def screenshots(self, url: str, stem: Path, places: list[str | None], width: int = WIDTH) -> None:
        """Save ``stem[-place]-light.png`` and ``-dark.png`` of the page at ``url``, scrolled to each place.

        A place is None (the top) or a CSS selector of the element to centre. At a width
        other than the desktop's, the page is shown as on a phone, the names end in ``-WIDTHpx``.
        """
        tab = self.tabs[0]
        tab.call("Page.bringToFront")
        tab.call("Emulation.setDeviceMetricsOverride",
                 {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width != WIDTH})
        self.visit([("screenshot", url)], lambda t: None)
        tab.evaluate(MATHJAX_DONE)
        stem.parent.mkdir(parents=True, exist_ok=True)
        for place in places:
            name = str(stem) + ("-" + re.sub(r"[^a-z0-9]+", "-", place.lower()).strip("-") if place else "") + \
                ("" if width == WIDTH else f"-{width}px")
            tab.evaluate(f"(() => {{ const e = document.querySelector({json.dumps(place)}); "
                         f"if (e) e.scrollIntoView({{block: 'center', behavior: 'instant'}}); }})()" if place
                         else "window.scrollTo({top: 0, behavior: 'instant'})")   # the theme scrolls smoothly
            for scheme in ("light", "dark"):
                tab.call("Emulation.setEmulatedMedia",
                         {"features": [{"name": "prefers-color-scheme", "value": scheme}]})
                self.devtools.pump(0.1)
                data = tab.call("Page.captureScreenshot", {"format": "png"})["data"]
                Path(f"{name}-{scheme}.png").write_bytes(base64.b64decode(data))
            tab.call("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "light"}]})
        tab.call("Emulation.setDeviceMetricsOverride",
                 {"width": WIDTH, "height": 900, "deviceScaleFactor": 1, "mobile": False})

    def close(self) -> None:
        if hasattr(self, "devtools"):
            try:
                self.devtools.call("Browser.close", timeout=5)
            except Exception:
                pass
            self.devtools.ws.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


# ---------------------------------------------------------------- the check

def problems_in_events(page: str, events: list[dict], origin: str) -> list[Problem]:
    found = []
    requests: dict[str, str] = {}
    for event in events:
        method, params = event["method"], event.get("params", {})
        if method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            requests[params["requestId"]] = url
            scheme = urllib.parse.urlparse(url).scheme
            if scheme not in ("data", "blob", "about") and not (url == origin or url.startswith(origin + "/")):
                found.append(Problem(page, "external", f"request to another host: {url}"))
        elif method == "Network.responseReceived":
            status = params["response"]["status"]
            if status >= 400:
                found.append(Problem(page, "request", f"HTTP {status} for {params['response']['url']}"))
        elif method == "Network.loadingFailed":
            url = requests.get(params["requestId"], "?")
            if params.get("canceled") or not url.startswith(origin):
                continue  # a canceled request is the page moving on; other hosts are reported above
            if params.get("errorText") and "ERR_ABORTED" not in params["errorText"]:
                found.append(Problem(page, "request", f"{params['errorText']} for {url}"))
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text", "exception")
            found.append(Problem(page, "javascript", text.split("\n")[0]))
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            found.append(Problem(page, "javascript", f"console error: {text}"))
        elif method == "Log.entryAdded":
            entry = params["entry"]
            if entry.get("level") == "error" and entry.get("source") not in ("network", "violation", "intervention"):
                found.append(Problem(page, "javascript", f"{entry.get('source')}: {entry.get('text')}"))
        elif method == "check.timeout":
            found.append(Problem(page, "request", f"page did not settle (loaded: {params['loaded']}, "
                                                  f"requests pending: {', '.join(params['pending']) or 'none'})"))
    return found


def problems_of_the_book(page: str, inspected: dict) -> list[Problem]:
    """What the book promises of a page: chunk lines that fit, each box once, figures that can be read."""
    found = [Problem(page, "chunk-line", f"{line} (the limit is {COLUMNS})") for line in inspected["long"]]
    found += [Problem(page, "admonition", f"the box '{title}' is on the page twice") for title in inspected["boxes"]]
    for figure in inspected["figures"]:
        missing = [what for what, there in (("number", figure["number"]), ("link to its code", figure["code"]),
                                            ("link to its data", figure["data"])) if not there]
        if missing:
            found.append(Problem(page, "figure", f"{figure['name']} has no {', no '.join(missing)}"))
        if figure["width"] < MIN_FIGURE_WIDTH:
            found.append(Problem(page, "figure", f"{figure['name']} is {figure['width']} px wide in a {WIDTH} px "
                                                 f"window (at least {MIN_FIGURE_WIDTH})"))
    return found


def site_path(root: Path, url_path: str) -> Path | None:
    """The file the local server sends for ``url_path``, or None."""
    relative = urllib.parse.unquote(url_path).lstrip("/")
    target = root / relative
    if target.is_dir():
        target = target / "index.html"
    return target if target.is_file() else None


def check_links(root: Path, origin: str, reports: dict[str, PageReport]) -> list[Problem]:
    found = []
    for page, report in reports.items():
        for href in sorted(set(report.links)):
            parsed = urllib.parse.urlparse(href)
            if parsed.scheme not in ("http", "https") or f"{parsed.scheme}://{parsed.netloc}" != origin:
                continue  # a link (not a request) elsewhere, e.g. to a paper
            target = site_path(root, parsed.path)
            shown = href[len(origin):]
            if target is None:
                found.append(Problem(page, "link", f"no such page or file: {shown}"))
                continue
            if not parsed.fragment:
                continue
            key = target.relative_to(root).as_posix()
            fragment = urllib.parse.unquote(parsed.fragment)
            if key in reports and fragment not in reports[key].ids:
                found.append(Problem(page, "anchor", f"no anchor #{fragment} in {key} (link {shown})"))
    return found


def pages_of(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.html")
                  if not any(part.startswith(".") for part in p.relative_to(root).parts))


def check_site(root: Path, screenshots: Path | None = None, shots: list[tuple[str, list[str | None]]] | None = None,
               progress=None, tabs: int = 2) -> tuple[list[Problem], int]:
    """Check every page of the site at ``root``; return (problems, pages checked)."""
    root = root.resolve()
    server = LocalServer(root)
    problems: list[Problem] = []
    reports: dict[str, PageReport] = {}
    try:
        browser = Browser(tabs)
    except BaseException:
        server.close()
        raise

    def inspect(tab: Tab) -> None:
        if not tab.evaluate(MATHJAX_DONE):
            problems.append(Problem(tab.page, "math", "MathJax did not finish typesetting within 15 s"))
        browser.dispatch(0)
        page = tab.page
        inspected = json.loads(tab.evaluate(INSPECT))
        problems.extend(problems_in_events(page, tab.events, server.origin))
        reports[page] = PageReport(set(inspected["ids"]), inspected["links"])
        for image in inspected["images"]:
            problems.append(Problem(page, "image", f"broken image {image.replace(server.origin, '')}"))
        for error in inspected["math"]:
            problems.append(Problem(page, "math", f"MathJax could not typeset: {error}"))
        problems.extend(problems_of_the_book(page, inspected))
        if progress:
            progress(page)

    try:
        browser.visit([(page, f"{server.origin}/{urllib.parse.quote(page)}") for page in pages_of(root)], inspect)
        problems += check_links(root, server.origin, reports)
        if screenshots is not None:
            shutil.rmtree(screenshots, ignore_errors=True)
            for page, places in shots or []:
                if page not in reports:
                    continue
                stem = page.replace("/", "_").removesuffix(".html")
                browser.screenshots(f"{server.origin}/{urllib.parse.quote(page)}", screenshots / stem, places)
                if page.startswith("chapters/"):
                    browser.screenshots(f"{server.origin}/{urllib.parse.quote(page)}", screenshots / stem, places,
                                        PHONE)
                if progress:
                    progress(f"screenshots of {stem}")
    finally:
        browser.close()
        server.close()
    return sorted(set(problems), key=lambda p: (p.page, p.kind, p.detail)), len(reports)


def default_shots(root: Path) -> list[tuple[str, list[str | None]]]:
    """A few pages worth looking at: the front page, the first chapter (top, and a figure with code;
    on a desktop and on a phone), the indexes."""
    pages = pages_of(root)
    chapters = [p for p in pages if p.startswith("chapters/")]
    files = [p for p in pages if p.startswith("files/")]
    api = [p for p in pages if p.startswith("api/")]
    shots: list[tuple[str, list[str | None]]] = [("index.html", [None]), ("chunks.html", [None])]
    if chapters:
        shots.append((chapters[0], [None, "figure"]))
    shots += [(p, [None]) for p in (files[:1] + api[:1])]
    return shots


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="the built site, e.g. build/book/html")
    parser.add_argument("--screenshots", help="keep screenshots of a few pages (light and dark) here")
    args = parser.parse_args(argv)
    root = Path(args.root)
    if not (root / "index.html").is_file():
        print(f"browser check: no {root}/index.html; build the book first ('make book')", file=sys.stderr)
        return 1
    start = time.monotonic()
    shots_dir = Path(args.screenshots) if args.screenshots else None
    verbose = os.environ.get("BROWSER_CHECK_VERBOSE")
    last = [time.monotonic()]

    def progress(page: str) -> None:
        if verbose:
            now = time.monotonic()
            print(f"  {now - last[0]:5.2f} s  {page}", flush=True)
            last[0] = now

    problems, count = check_site(root, shots_dir, default_shots(root) if shots_dir else None, progress)
    for problem in problems:
        print(f"  {problem}")
    seconds = time.monotonic() - start
    where = f"; screenshots in {shots_dir}" if shots_dir else ""
    print(f"browser check: {count} pages, {len(problems)} problem(s) in {seconds:.0f} s{where}")
    return 1 if problems or count == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
