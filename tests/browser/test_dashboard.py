"""The dashboard in a real browser (Debian's Chromium, headless) against a real
`hearth up`: sign in and out, a wrong key, deploy from the browser, invoke from a
function page, live updates over Server-Sent Events, CSRF, keyboard and phone width.
Each page's requests and console are recorded (conftest.py): only hearth's host, no
console error."""

import json
import re
import threading
import time
import zipfile

from playwright.sync_api import expect

from conftest import DOCS, fixture_files, raw_request, sign_in

LIVE = 2000  # ms: the "a change appears in under 2 s"


def test_a_wrong_key_says_so_and_opens_no_session(page, hearth, context, recorder):
    # The refused sign-in is a 401, which Chromium logs as a failed resource load.
    recorder.allow(r"status of 401")
    page.goto(hearth.url + "/")
    page.get_by_label("API key").fill("not-the-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("that API key is wrong")
    expect(page.get_by_role("button", name="Sign out")).to_be_hidden()
    assert not [c for c in context.cookies() if c["name"] == "hearth_session"]
    assert raw_request(hearth.url + "/v1/status")[0] == 401


def test_sign_in_keeps_no_key_in_the_page_and_sign_out_ends_the_session(page, hearth, context):
    sign_in(page, hearth)
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    cookie = next(c for c in context.cookies() if c["name"] == "hearth_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["expires"] > time.time()
    assert page.evaluate("document.cookie") == ""
    stored = page.evaluate("JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage)])")
    assert hearth.key not in stored
    assert hearth.key not in page.content()
    assert page.get_by_label("API key").input_value() == ""
    # The cookie is good for the API, as a Bearer key is.
    jar = {"Cookie": f"hearth_session={cookie['value']}"}
    assert raw_request(hearth.url + "/v1/status", headers=jar)[0] == 200

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    expect(page.get_by_text("Signed out.")).to_be_visible()
    status, _, body = raw_request(hearth.url + "/v1/status", headers=jar)
    assert status == 401 and json.loads(body)["error"]["code"] == "session_expired"
    page.reload()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()


def test_an_ended_session_returns_the_open_page_to_sign_in(page, hearth, context):
    sign_in(page, hearth)
    other = context.new_page()
    other.goto(hearth.url + "/")
    other.get_by_role("button", name="Sign out").click()
    expect(other.get_by_role("button", name="Sign in")).to_be_visible()
    # The first tab learns it from its event stream, without a click or reload.
    expect(page.get_by_label("API key")).to_be_visible(timeout=LIVE)
    expect(page.get_by_role("alert")).to_contain_text("sign in again")
    other.close()


def test_writes_need_the_csrf_token_and_bearer_keys_are_unchanged(page, hearth, context):
    sign_in(page, hearth)
    hearth.deploy("csrf-probe", fixture_files("py-echo"))
    cookie = next(c for c in context.cookies() if c["name"] == "hearth_session")["value"]
    jar = {"Cookie": f"hearth_session={cookie}"}
    url = hearth.url + "/v1/functions/csrf-probe"
    status, _, body = raw_request(url, "DELETE", headers=jar)
    assert status == 403 and json.loads(body)["error"]["code"] == "csrf_failed"
    status, _, _ = raw_request(url, "DELETE", headers={**jar, "X-CSRF-Token": "0" * 64})
    assert status == 403
    csrf = page.evaluate("fetch('/ui/session').then(r => r.json()).then(s => s.csrf_token)")
    evil = {**jar, "X-CSRF-Token": csrf, "Origin": "http://evil.example"}
    assert raw_request(url, "DELETE", headers=evil)[0] == 403
    # A wrong Bearer key is refused even beside a good cookie.
    status, _, _ = raw_request(url, "GET", headers={**jar, "Authorization": "Bearer wrong"})
    assert status == 401
    assert hearth.request("GET", "/v1/functions/csrf-probe")[0] == 200
    assert raw_request(url, "DELETE", headers={**jar, "X-CSRF-Token": csrf})[0] == 204


def test_deploy_from_the_editor_then_invoke_from_its_page(page, hearth):
    sign_in(page, hearth)
    page.get_by_role("link", name="Deploy", exact=True).click()
    page.get_by_label("Name").fill("web-hello")
    page.get_by_label("Runtime").select_option("python")
    expect(page.get_by_label("Code", exact=True)).to_have_value(
        re.compile(r"def handler\(event, context\)"))
    page.get_by_label("Memory (MB)").fill("64")
    page.get_by_role("button", name="Deploy").click()
    expect(page.get_by_role("heading", name="web-hello", exact=True)).to_be_visible(timeout=30000)
    assert hearth.json("GET", "/v1/functions/web-hello")["memory_mb"] == 64

    page.get_by_label("Event").fill('{"name": "browser"}')
    page.get_by_role("button", name="Invoke").click()
    result = page.get_by_test_id("result")
    expect(result).to_contain_text("Hello, browser!", timeout=30000)
    expect(page.get_by_test_id("logs")).to_contain_text("saying hello to browser")
    outcome = page.locator(".outcome")
    expect(outcome).to_contain_text("success")
    expect(outcome).to_contain_text("cold")
    expect(outcome).to_contain_text("Memory peak")
    page.get_by_role("button", name="Invoke").click()
    expect(outcome).to_contain_text("warm", timeout=30000)

    # The invocation page: result, logs in full.
    outcome.get_by_role("link").click()
    expect(page.get_by_role("heading", name="Result")).to_be_visible()
    expect(page.get_by_test_id("full-logs")).to_contain_text("saying hello to browser", timeout=10000)


def test_deploy_an_uploaded_zip_and_a_new_version(page, hearth, tmp_path):
    archive = tmp_path / "code.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("index.js", "exports.handler = async (e) => ({node: true, got: e});\n")
    sign_in(page, hearth)
    page.goto(hearth.url + "/#/deploy")
    page.get_by_label("Name").fill("web-zip")
    page.get_by_label("Runtime").select_option("nodejs")
    page.get_by_label("Upload a zip").check()
    page.get_by_label("Zip file").set_input_files(str(archive))
    page.get_by_role("button", name="Deploy").click()
    expect(page.get_by_role("heading", name="web-zip", exact=True)).to_be_visible(timeout=30000)
    expect(page.get_by_text("v1", exact=True).first).to_be_visible()
    page.get_by_label("Event").fill('[1, 2]')
    page.get_by_role("button", name="Invoke").click()
    expect(page.get_by_test_id("result")).to_contain_text('"node": true', timeout=30000)
    page.get_by_role("link", name="Deploy a new version").click()
    expect(page.get_by_label("Name")).to_have_value("web-zip")
    expect(page.get_by_label("Runtime")).to_have_value("nodejs")
    page.get_by_role("button", name="Deploy").click()
    expect(page.get_by_role("heading", name="web-zip", exact=True)).to_be_visible(timeout=30000)
    expect(page.get_by_text("v2", exact=True).first).to_be_visible()


def test_an_api_invocation_appears_on_the_open_page_without_a_reload(page, hearth):
    hearth.deploy("live-echo", fixture_files("py-echo"))
    hearth.invoke("live-echo", {"warm": "up"})
    sign_in(page, hearth)
    page.goto(hearth.url + "/#/functions/live-echo")
    rows = page.locator("table").filter(has_text="newest invocations").locator("tbody tr")
    expect(rows).to_have_count(1, timeout=10000)
    page.evaluate("window.__notReloaded = true")
    invocation = hearth.invoke("live-echo", {"from": "api"})
    answered = time.monotonic()
    expect(page.get_by_role("link", name=invocation["id"])).to_be_visible(timeout=LIVE)
    seen_after = time.monotonic() - answered
    print(f"an API invocation showed on the open page {seen_after * 1000:.0f} ms after it answered")
    expect(rows).to_have_count(2)
    assert page.evaluate("window.__notReloaded") is True
    # The overview's feed sees it too.
    page.get_by_role("link", name="Overview").click()
    expect(page.get_by_role("link", name=f"invocation {invocation['id']}: success")).to_be_visible(timeout=LIVE)
    assert int(page.get_by_test_id("total-5m").text_content()) >= 2


def test_a_workers_active_count_changes_live_during_a_long_invocation(page, hearth):
    hearth.deploy("live-sleep", fixture_files("py-sleep"))
    hearth.invoke("live-sleep", {"seconds": 0})
    sign_in(page, hearth)
    worker = hearth.json("GET", "/v1/status")["workers"][0]["id"]
    active = page.get_by_test_id(f"active-{worker}")
    expect(active).to_have_text("0", timeout=LIVE)
    done = {}
    call = threading.Thread(target=lambda: done.update(r=hearth.invoke("live-sleep", {"seconds": 4})))
    call.start()
    try:
        expect(active).to_have_text("1", timeout=LIVE + 2000)
        expect(page.get_by_test_id("total-active")).to_have_text("1")
    finally:
        call.join(timeout=60)
    assert done["r"]["status"] == "success"
    expect(active).to_have_text("0", timeout=LIVE)
    expect(page.get_by_test_id("total-warm")).not_to_have_text("0")


def test_the_function_list_shows_24h_figures_and_links(page, hearth):
    hearth.deploy("list-fail", fixture_files("py-fail"))
    hearth.invoke("list-fail", {"action": "raise", "detail": "x"})
    hearth.invoke("list-fail", {})
    sign_in(page, hearth)
    page.get_by_role("link", name="Functions", exact=True).click()
    # The overview's tables link to the function too: look only in the function list,
    # which replaces them once the route has changed.
    listing = page.get_by_role("table", name="Functions, with their last 24 hours")
    row = listing.locator("tr").filter(has=page.get_by_role("link", name="list-fail", exact=True))
    expect(row).to_contain_text("python")
    expect(row).to_contain_text("50.0%")
    row.get_by_role("link", name="list-fail").click()
    expect(page.get_by_role("heading", name="list-fail", exact=True)).to_be_visible()
    expect(page.get_by_role("img", name="Memory peak per invocation, with the limit")).to_be_visible()
    expect(page.get_by_role("img", name="Duration of the last 2 invocations")).to_be_visible()


def test_delete_asks_for_confirmation(page, hearth):
    hearth.deploy("doomed", fixture_files("py-echo"))
    sign_in(page, hearth)
    page.goto(hearth.url + "/#/functions/doomed")
    page.get_by_role("button", name="Delete").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Delete doomed?")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    assert hearth.request("GET", "/v1/functions/doomed")[0] == 200
    page.get_by_role("button", name="Delete").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete doomed").click()
    expect(page.get_by_role("heading", name="Functions")).to_be_visible()
    assert hearth.request("GET", "/v1/functions/doomed")[0] == 404


def test_usable_with_the_keyboard_alone(page, hearth):
    hearth.deploy("keys", fixture_files("py-echo"))
    page.goto(hearth.url + "/")
    expect(page.get_by_label("API key")).to_be_focused()
    page.keyboard.type(hearth.key)
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Overview").wait_for()
    # Tab from the brand link to the Functions link, then follow it.
    page.get_by_role("link", name="hearth").focus()
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Functions"
    page.keyboard.press("Enter")
    link = page.get_by_role("link", name="keys", exact=True)
    expect(link).to_be_visible()
    link.focus()
    page.keyboard.press("Enter")
    page.get_by_label("Event").focus()
    page.keyboard.press("Control+A")
    page.keyboard.type('{"k": 1}')
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Invoke"
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("result")).to_contain_text('"k": 1', timeout=30000)


def test_readable_at_phone_width(browser, hearth, recorder):
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = ctx.new_page()
    recorder.attach(page)
    hearth.deploy("phone", fixture_files("py-echo"))
    hearth.invoke("phone", {})
    sign_in(page, hearth)
    for route in ["#/", "#/functions", "#/functions/phone", "#/deploy"]:
        page.goto(hearth.url + "/" + route)
        page.locator("main h1").wait_for()
        page.wait_for_timeout(300)
        wide = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert wide <= 0, f"{route} is {wide}px wider than a phone"
    ctx.close()
    recorder.check()


def test_screenshots_for_the_readme(page, hearth):
    thumbnail = (
        "import hashlib\n\n\n"
        "def handler(event, context):\n"
        "    name = event.get('image', 'unnamed') if isinstance(event, dict) else 'unnamed'\n"
        "    print(f'resizing {name} to 128x128')\n"
        "    digest = hashlib.sha256(str(name).encode()).hexdigest()[:12]\n"
        "    return {'thumbnail': f'thumbs/{digest}.png', 'width': 128, 'height': 128}\n")
    hearth.deploy("thumbnail", {"main.py": thumbnail}, memory_mb=64)
    hearth.deploy("resize", fixture_files("py-fail"))
    for i in range(24):  # enough history for the AutoTuner's advice, where it exists
        hearth.invoke("thumbnail", {"image": i})
    hearth.invoke("resize", {"action": "raise", "detail": "corrupt image"})
    hearth.invoke("resize", {})
    sign_in(page, hearth)
    expect(page.get_by_test_id("total-5m")).not_to_have_text("—", timeout=LIVE)
    page.wait_for_timeout(600)
    DOCS.mkdir(exist_ok=True)
    page.screenshot(path=str(DOCS / "dashboard-overview.png"), full_page=True)
    page.goto(hearth.url + "/#/functions/thumbnail")
    page.get_by_label("Event").fill('{"image": "cat.png"}')
    page.get_by_role("button", name="Invoke").click()
    expect(page.get_by_test_id("result")).to_contain_text("thumbs/", timeout=30000)
    expect(page.get_by_role("img", name="Duration of the last 25 invocations")).to_be_visible(timeout=LIVE)
    page.screenshot(path=str(DOCS / "dashboard-function.png"), full_page=True)


def test_the_invocation_page_has_error_trace_logs_and_outputs_to_download(page, hearth):
    code = (
        "import os\n\n\n"
        "def handler(event, context):\n"
        "    print('writing the report')\n"
        "    with open(os.path.join(os.environ['OUTPUT_DIR'], 'report.csv'), 'w') as f:\n"
        "        f.write('a,b\\n1,2\\n')\n"
        "    if event.get('fail'):\n"
        "        raise KeyError('no such column')\n"
        "    return {'rows': 1}\n")
    hearth.deploy("reporter", {"main.py": code})
    good = hearth.invoke("reporter", {})
    bad = hearth.invoke("reporter", {"fail": True})
    assert bad["status"] == "error"
    sign_in(page, hearth)
    # Outputs are uploaded behind the response: wait until the API has this one.
    deadline = time.monotonic() + 30
    while hearth.request("GET", f"/v1/invocations/{good['id']}/outputs/report.csv")[0] != 200:
        assert time.monotonic() < deadline, "the output was never uploaded"
        time.sleep(0.1)
    page.goto(hearth.url + f"/#/invocations/{good['id']}")
    expect(page.get_by_test_id("full-logs")).to_contain_text("writing the report")
    with page.expect_download() as download:
        page.get_by_role("link", name="report.csv").click()
    assert open(download.value.path()).read() == "a,b\n1,2\n"
    page.goto(hearth.url + f"/#/invocations/{bad['id']}")
    error = page.get_by_role("region", name="Error")
    expect(error).to_contain_text("KeyError")
    expect(error).to_contain_text("no such column")
    expect(error).to_contain_text('File "/code/main.py"')


def test_every_page_loads_only_from_hearth_without_console_errors(page, hearth, recorder):
    hearth.deploy("tour", fixture_files("py-echo"))
    invocation = hearth.invoke("tour", {"tour": True})
    sign_in(page, hearth)
    for route, heading in [
        ("#/", "Overview"), ("#/functions", "Functions"), ("#/functions/tour", "tour"),
        ("#/deploy", "Deploy a function"), ("#/deploy/tour", "Deploy a new version of tour"),
        (f"#/invocations/{invocation['id']}", f"Invocation {invocation['id']}"),
    ]:
        page.goto(hearth.url + "/" + route)
        expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
        page.wait_for_timeout(500)
    page.reload()
    expect(page.get_by_role("heading", name=f"Invocation {invocation['id']}")).to_be_visible()
    recorder.check()
    assert recorder.hosts == {hearth.netloc}


def test_the_autotuner_panel_applies_advice_where_the_tuner_exists(page, hearth):
    hearth.deploy("oversized", fixture_files("py-echo"), memory_mb=512)
    for i in range(25):
        hearth.invoke("oversized", {"i": i})
    has_tuner = hearth.request("GET", "/v1/functions/oversized/tuning")[0] == 200
    print(f"this hearth {'has' if has_tuner else 'has no'} AutoTuner")
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    sign_in(page, hearth)
    page.goto(hearth.url + "/#/functions/oversized")
    # The function's facts (the AutoTuner panel says "512 MB" too, as "Now").
    memory = page.locator("dt", has_text=re.compile("^Memory$")).locator("xpath=following-sibling::dd[1]")
    expect(memory).to_have_text("512 MB")
    panel = page.get_by_role("region", name="AutoTuner")
    if not has_tuner:
        # This hearth has no tuner: no panel, and the page never asked for advice.
        page.wait_for_timeout(500)
        expect(panel).to_have_count(0)
        assert not [u for u in requests if "/tuning" in u]
        return
    expect(panel).to_contain_text("Recommended")
    apply = panel.get_by_role("button", name="Apply")
    expect(apply).to_be_enabled()
    apply.click()
    expect(panel.get_by_role("status")).to_contain_text("Applied: version 2", timeout=10000)
    tuned = hearth.json("GET", "/v1/functions/oversized")
    assert tuned["version"] == 2 and tuned["memory_mb"] < 512
    expect(page.get_by_text("v2", exact=True).first).to_be_visible()


def test_a_deploy_that_fails_shows_why_and_makes_no_function(page, hearth, recorder):
    # The refused deploy is a 422, which Chromium logs as a failed resource load.
    recorder.allow(r"status of 422")
    sign_in(page, hearth)
    page.goto(hearth.url + "/#/deploy")
    page.get_by_label("Name").fill("broken-cpp")
    page.get_by_label("Runtime").select_option("cpp")
    expect(page.get_by_label("Code", exact=True)).to_have_value(
        re.compile(r"std::string handler"))
    page.get_by_label("Code", exact=True).fill("int main() { return missing_symbol; }\n")
    page.get_by_role("button", name="Deploy").click()
    message = page.get_by_role("status").filter(has_text="Deploy failed")
    expect(message).to_contain_text("missing_symbol", timeout=60000)
    expect(page.get_by_role("heading", name="Deploy a function")).to_be_visible()
    assert hearth.request("GET", "/v1/functions/broken-cpp")[0] == 404
