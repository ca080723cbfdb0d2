"""Headless Chromium driven over the DevTools protocol: what the browser tests of the pages share.

A module of its own at the top of tests/ (not a conftest.py), imported by name, as
``running_server`` is by the serving tests.
"""

import json
import shutil
import subprocess
import time
from pathlib import Path

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


class Browser:
    """Headless Chromium with one page over the DevTools protocol, keeping every event it reports."""

    def __init__(self, profile: Path):
        from websockets.sync.client import connect

        profile.mkdir(parents=True)
        command = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                   "--no-default-browser-check", "--remote-debugging-port=0", f"--user-data-dir={profile}",
                   "about:blank"]
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, env={"HOME": str(profile), "PATH": "/usr/bin:/bin"})
        self.socket, self.session, self.next_id, self.events = None, None, 0, []
        try:
            port_file = profile / "DevToolsActivePort"  # written once Chromium listens: port, then path
            deadline = time.monotonic() + 30
            while not (port_file.is_file() and len(port_file.read_text().split()) >= 2):
                assert self.process.poll() is None, f"chromium exited with status {self.process.returncode}"
                assert time.monotonic() < deadline, "chromium never wrote DevToolsActivePort"
                time.sleep(0.05)
            port, path = port_file.read_text().split()[:2]
            self.socket = connect(f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=10)
            target = self.call("Target.createTarget", url="about:blank")["targetId"]
            self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            for domain in ("Runtime", "Log", "Page"):
                self.call(f"{domain}.enable")
        except BaseException:
            self.close()
            raise

    def _receive(self, deadline: float) -> dict:
        message = json.loads(self.socket.recv(timeout=max(0.01, deadline - time.monotonic())))
        if "method" in message:
            self.events.append(message)
        return message

    def call(self, method: str, timeout: float = 20.0, **params) -> dict:
        """Send one command (to the page once attached) and return its result."""
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if self.session is not None:
            message["sessionId"] = self.session
        self.socket.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self.next_id:
                assert "error" not in reply, f"{method} failed: {reply.get('error')}"
                return reply["result"]

    def open(self, url: str, timeout: float = 20.0):
        """Load a page and wait for its load event (its inline script has run by then)."""
        self.events.clear()
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        while not any(event["method"] == "Page.loadEventFired" for event in self.events):
            self._receive(deadline)

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (promises awaited); a thrown error fails the test."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise AssertionError(f"{expression!r} threw: {details.get('exception', {}).get('description', details)}")
        return result["result"].get("value")

    def errors(self) -> list:
        """Console errors, uncaught exceptions and browser log errors (a refused fetch, say) so far."""
        return [event for event in self.events
                if event["method"] == "Runtime.exceptionThrown"
                or (event["method"] == "Runtime.consoleAPICalled" and event["params"]["type"] in ("error", "assert"))
                or (event["method"] == "Log.entryAdded" and event["params"]["entry"]["level"] == "error")]

    def close(self):
        if self.socket is not None:
            self.socket.close()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
