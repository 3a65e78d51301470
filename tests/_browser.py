"""Headless Chromium for the site's layout checks: load a page at a given width, measure it, screenshot it.

Debian's ``chromium`` (``.ci/run`` installs it), driven over the DevTools protocol with tornado's
websocket client (a dependency of the notebook kernel), with the flags a closed network needs.
"""

import asyncio
import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Optional

from tornado.websocket import websocket_connect

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
]


def chromium() -> Optional[str]:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """One headless Chromium with one page; ``open(url, width)``, then ``evaluate(js)`` and ``screenshot()``."""

    def __init__(self) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="hookedmlp-chromium-"))
        self.proc = subprocess.Popen(
            [chromium(), *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("chromium did not start")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        self.loop = asyncio.new_event_loop()

        async def connect() -> Any:  # tornado's futures belong to the loop running when they are made
            return await websocket_connect(page["webSocketDebuggerUrl"], max_message_size=2**28)

        self.ws = self.loop.run_until_complete(connect())
        self.ids = 0

    def call(self, method: str, **params: Any) -> dict:
        """One DevTools command; its result."""
        self.ids += 1
        request = json.dumps({"id": self.ids, "method": method, "params": params})

        async def exchange() -> dict:
            await self.ws.write_message(request)
            while True:
                message = json.loads(await self.ws.read_message())
                if message.get("id") == self.ids:
                    return message

        message = self.loop.run_until_complete(asyncio.wait_for(exchange(), 60))
        if "error" in message:
            raise RuntimeError(f"{method}: {message['error']}")
        return message["result"]

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:60]}...: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str, width: int, height: int = 900) -> None:
        """Load ``url`` in a ``width`` px wide window and wait until it and its fonts and images are ready."""
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + 60
        while self.evaluate("document.readyState") != "complete" or self.evaluate("location.href") != url:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not load")
            time.sleep(0.05)
        self.evaluate("document.fonts.ready.then(() => true)")

    def screenshot(self, path: Path) -> Path:
        """The whole page as a PNG."""
        size = self.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
        clip = {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1}
        data = self.call("Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
            self.loop.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)
