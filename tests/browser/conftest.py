"""Fixtures of the dashboard's browser tests: a real `hearth up` (the debug binary) on a
free port with its own data dir, Debian's Chromium driven by Playwright, and a page
that records every request's host and every console error so a test can assert that
the dashboard talks to nobody but hearth and logs nothing wrong."""

import io
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
DOCS = ROOT / "docs"


class Hearth:
    """A running `hearth up` and a small client of its API."""

    def __init__(self, url, key, proc, data_dir):
        self.url = url
        self.key = key
        self.proc = proc
        self.data_dir = data_dir
        self.netloc = urllib.parse.urlsplit(url).netloc

    def request(self, method, path, body=None, headers=None, timeout=60):
        """(status, headers, body bytes) of a request with the admin key."""
        all_headers = {"Authorization": f"Bearer {self.key}"}
        all_headers.update(headers or {})
        return raw_request(self.url + path, method, body, all_headers, timeout)

    def json(self, method, path, body=None, **kw):
        data = json.dumps(body).encode() if body is not None else None
        status, _, raw = self.request(method, path, data, {"Content-Type": "application/json"}, **kw)
        assert 200 <= status < 300, f"{method} {path}: {status} {raw[:500]!r}"
        return json.loads(raw) if raw else None

    def deploy(self, name, files, runtime="python", memory_mb=128, timeout_ms=10000):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            for path, text in files.items():
                z.writestr(path, text)
        boundary = uuid.uuid4().hex
        config = json.dumps({"runtime": runtime, "memory_mb": memory_mb, "timeout_ms": timeout_ms})
        body = (
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"config\"\r\n\r\n{config}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"code\"; filename=\"code.zip\"\r\n"
            "Content-Type: application/zip\r\n\r\n"
        ).encode() + buf.getvalue() + f"\r\n--{boundary}--\r\n".encode()
        status, _, raw = self.request(
            "PUT", f"/v1/functions/{name}", body,
            {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert status in (200, 201), f"deploy {name}: {status} {raw[:500]!r}"
        return json.loads(raw)

    def invoke(self, name, event, timeout=60):
        return self.json("POST", f"/v1/functions/{name}/invoke", event, timeout=timeout)


def raw_request(url, method="GET", body=None, headers=None, timeout=60):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def fixture_files(name):
    d = ROOT / "tests/fixtures/functions" / name
    return {p.name: p.read_text() for p in d.iterdir() if p.is_file()}


@pytest.fixture(scope="session")
def hearth():
    binary = ROOT / "target/debug/hearth"
    assert binary.exists(), f"{binary} is missing: run scripts/build.sh debug first"
    agent = os.environ.get("HEARTH_AGENT") or str(
        ROOT / "target/agent/x86_64-unknown-linux-gnu/release/hearth-agent")
    assert Path(agent).exists(), f"the static agent {agent} is missing: run scripts/build.sh debug"
    data_dir = tempfile.mkdtemp(prefix="hearth-browser-")
    log = open(Path(data_dir) / "hearth.log", "w+")
    env = dict(os.environ, HEARTH_AGENT=agent)
    env.pop("HEARTH_API_KEY", None)
    proc = subprocess.Popen(
        [str(binary), "--data-dir", data_dir, "up", "--port", "0", "--no-sample"],
        stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    url = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.search(r"hearth listening on (http://\S+)", line)
        if m:
            url = m.group(1)
            break
    if url is None:
        proc.kill()
        log.seek(0)
        pytest.fail(f"hearth up did not start:\n{log.read()[-3000:]}")
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    key = (Path(data_dir) / "admin.key").read_text().strip()
    server = Hearth(url, key, proc, data_dir)
    deadline = time.monotonic() + 60
    while raw_request(url + "/healthz")[0] != 200:
        assert time.monotonic() < deadline, "hearth never became healthy"
        time.sleep(0.1)
    yield server
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def browser():
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: run scripts/browser.sh"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


class Recorder:
    """Every request's host and every console error or uncaught exception of a page."""

    def __init__(self, hearth):
        self.hearth = hearth
        self.hosts = set()
        self.errors = []
        self.allowed = []

    def attach(self, page):
        page.on("request", lambda r: self.hosts.add(urllib.parse.urlsplit(r.url).netloc))
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

    def allow(self, pattern):
        """A console error the test causes on purpose (a 401 of a wrong key, say)."""
        self.allowed.append(re.compile(pattern))

    def check(self):
        assert self.hosts <= {self.hearth.netloc}, f"requests to other hosts: {self.hosts}"
        unexpected = [e for e in self.errors if not any(a.search(e) for a in self.allowed)]
        assert not unexpected, f"console errors: {unexpected}"


@pytest.fixture
def context(browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    yield ctx
    ctx.close()


@pytest.fixture
def recorder(hearth):
    return Recorder(hearth)


@pytest.fixture
def page(context, recorder):
    page = context.new_page()
    recorder.attach(page)
    yield page
    recorder.check()


def sign_in(page, hearth):
    page.goto(hearth.url + "/")
    page.get_by_label("API key").fill(hearth.key)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Overview").wait_for()
