"""The report in a real browser: headless Chromium (Debian's ``chromium``) renders the HTML,
served from 127.0.0.1, to a screenshot that is not blank, and its network log shows no request
of the page's beyond that server.

.ci/run installs the package; elsewhere the test is skipped with the reason.
"""
import contextlib
import functools
import http.server
import json
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from PIL import Image, ImageStat
from report_fixture import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                                                         "(apt-get install chromium; .ci/run does)")
# No background traffic of the browser's own (updates, sync, first-run pages): what the log
# then holds comes from the page.
QUIET = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
         "--disable-background-networking", "--disable-component-update",
         "--disable-default-apps", "--disable-extensions", "--no-default-browser-check"]


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *QUIET, f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=180, cwd=tmp_path)


@contextlib.contextmanager
def serve(folder: Path):
    """An HTTP server for ``folder`` on 127.0.0.1 (a free port); yields its base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def page_requests(net_log: Path, site: str) -> set[str]:
    """URLs of the requests made for the page: those whose network isolation key is the
    page's site. The browser's own traffic (update checks, account pings) has another key."""
    text = net_log.read_text().rstrip().rstrip(",")
    log = json.loads(text if text.endswith("}") else text + "]}")
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return {event["params"]["url"] for event in log["events"]
            if event["type"] == start_job and "url" in event.get("params", {})
            and event["params"].get("network_isolation_key", "").startswith(site)}


def load(tmp_path: Path, url: str, name: str) -> tuple[Path, set[str]]:
    shot, net_log = tmp_path / f"{name}.png", tmp_path / f"{name}.netlog.json"
    done = chromium(tmp_path, "--window-size=1280,2400", f"--screenshot={shot}",
                    f"--log-net-log={net_log}", url)
    assert shot.is_file(), done.stderr[-2000:]
    return shot, page_requests(net_log, "http://127.0.0.1")


def test_report_renders_in_chromium_without_network(tmp_path):
    html = write_report(tmp_path / "study")
    # a control page with one external image: the check must see its request
    (html.parent / "control.html").write_text(
        '<html><body><p>control</p><img src="http://203.0.113.7/pixel.png"></body></html>')
    with serve(html.parent) as base:
        shot, requests = load(tmp_path, f"{base}/report.html", "report")
        _, control = load(tmp_path, f"{base}/control.html", "control")
    assert "http://203.0.113.7/pixel.png" in control
    assert f"{base}/report.html" in requests
    assert {url for url in requests if not url.startswith(base + "/")} == set()
    image = Image.open(shot).convert("L")
    assert image.size == (1280, 2400)
    # not blank: text, tables and figures give many dark pixels and strong contrast
    dark = sum(image.histogram()[:128]) / (image.size[0] * image.size[1])
    assert dark > 0.005 and ImageStat.Stat(image).stddev[0] > 20


def test_report_dom_holds_the_tables_and_figures(tmp_path):
    html = write_report(tmp_path / "study")
    dom = chromium(tmp_path, "--dump-dom", html.as_uri()).stdout
    assert "Table 1: CIFAR-10, ResNet-20/56, MultiStepLR" in dom
    assert dom.count("<figure") >= 4 and "<svg" in dom
    assert "Claims and verdicts" in dom
