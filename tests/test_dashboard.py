"""The dashboard in a real browser: headless Chromium (Debian's chromium and
chromium-driver, which .ci/run installs) opens it while a workload runs and
finds the nodes, a running actor, finished and running tasks, the timeline
and an actor's log; the test saves a screenshot."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import ROOT, assert_no_orphans, run_cli

import runtime
from runtime._private import auth

pytestmark = pytest.mark.timeout(180)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")


@runtime.remote
class Greeter:
    def greet(self, who: str) -> str:
        print(f"hello, {who}")
        return who


@runtime.remote
def square(x: int) -> int:
    return x * x


@runtime.remote
def wait_for(path: str) -> None:
    import time

    while not os.path.exists(path):
        time.sleep(0.02)


@pytest.fixture
def dashboard() -> Iterator[Any]:
    ctx = runtime.init(
        num_cpus=2,
        include_dashboard=True,
        _system_config={"dashboard_port": 0, "task_events_report_interval_s": 0.1},
    )
    try:
        yield ctx
    finally:
        runtime.shutdown()
        assert_no_orphans(ctx.session_dir)


def test_the_api_needs_the_token(dashboard: Any) -> None:
    url = f"http://{dashboard.dashboard_url}"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{url}/api/cluster", timeout=10)
    assert refused.value.code == 401
    with pytest.raises(urllib.error.HTTPError) as wrong:
        urllib.request.urlopen(f"{url}/?token=wrong", timeout=10)
    assert wrong.value.code == 401 and b"token" in wrong.value.read()
    request = urllib.request.Request(
        f"{url}/api/nodes", headers={"Authorization": f"Bearer {auth.token()}"}
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert b'"ALIVE"' in reply.read()
    envs = urllib.request.Request(
        f"{url}/api/runtime_envs", headers={"Authorization": f"Bearer {auth.token()}"}
    )
    with urllib.request.urlopen(envs, timeout=10) as reply:
        assert isinstance(json.loads(reply.read()), list)
    stacks = urllib.request.Request(
        f"{url}/api/stacks?pid={os.getpid()}", headers={"Authorization": f"Bearer {auth.token()}"}
    )
    with urllib.request.urlopen(stacks, timeout=10) as reply:
        text = json.loads(reply.read())["text"]
    assert f"=== driver pid={os.getpid()}" in text and "test_the_api_needs_the_token" in text


@pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="Debian's chromium and chromium-driver are not installed (.ci/run installs them)",
)
def test_the_page_in_headless_chromium(dashboard: Any, tmp_path: Any) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    gate = tmp_path / "gate"
    greeter = Greeter.remote()
    assert runtime.get(greeter.greet.remote("browser")) == "browser"
    assert runtime.get([square.remote(i) for i in range(5)]) == [0, 1, 4, 9, 16]
    running = wait_for.remote(str(gate))

    options = Options()
    options.binary_location = CHROMIUM  # type: ignore[assignment]
    profile = tempfile.mkdtemp(prefix="rt-chromium-")
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--window-size=1400,900",
        f"--user-data-dir={profile}",
    ):  # fmt: skip
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    wait = WebDriverWait(browser, 30, poll_frequency=0.1)
    try:
        browser.get(f"http://{dashboard.dashboard_url}/?token={auth.token()}")

        def rows(selector: str) -> list[Any]:
            return browser.find_elements(By.CSS_SELECTOR, selector)

        def click_first(selector: str) -> bool:
            # The tables are redrawn as they refresh: a row found may be gone
            # by the click; then it is found again.
            try:
                found = rows(selector)
                if found:
                    found[0].click()
                return bool(found)
            except StaleElementReferenceException:
                return False

        node_id = dashboard.address_info["node_id"]
        wait.until(lambda _: rows(f'#nodes-table tr[data-node-id="{node_id}"][data-state="ALIVE"]'))
        events = '#events-table tr[data-severity="INFO"]'
        wait.until(lambda _: any("joined" in r.text for r in rows(events)))

        browser.find_element(By.CSS_SELECTOR, '#tabs button[data-tab="actors"]').click()
        wait.until(lambda _: rows('#actors-table tr[data-state="ALIVE"]'))
        actor_row = rows('#actors-table tr[data-state="ALIVE"]')[0]
        assert "Greeter" in actor_row.text

        browser.find_element(By.CSS_SELECTOR, '#tabs button[data-tab="tasks"]').click()
        wait.until(
            lambda _: len(rows('#tasks-table tr[data-name="square"][data-state="FINISHED"]')) == 5
        )
        wait.until(lambda _: rows('#tasks-table tr[data-name="wait_for"][data-state="RUNNING"]'))
        browser.find_element(By.CSS_SELECTOR, '#task-filter select[name="state"]').send_keys(
            "FAILED"
        )
        wait.until(lambda _: not rows("#tasks-table tr[data-state]"))

        browser.find_element(By.CSS_SELECTOR, '#tabs button[data-tab="timeline"]').click()
        wait.until(lambda _: len(rows('#timeline-chart rect.slice[data-name="square"]')) == 5)
        browser.save_screenshot(str(tmp_path / "timeline.png"))
        if os.environ.get("RUNTIME_DASHBOARD_SCREENSHOT"):
            shutil.copy(tmp_path / "timeline.png", os.path.join(ROOT, "docs", "timeline.png"))

        browser.find_element(By.CSS_SELECTOR, '#tabs button[data-tab="actors"]').click()
        wait.until(lambda _: click_first('#actors-table tr[data-state="ALIVE"] a'))
        wait.until(lambda _: "hello, browser" in browser.find_element(By.ID, "log-view").text)

        browser.find_element(By.CSS_SELECTOR, '#tabs button[data-tab="tasks"]').click()
        state_filter = browser.find_element(By.CSS_SELECTOR, '#task-filter select[name="state"]')
        Select(state_filter).select_by_value("")
        wait.until(lambda _: len(rows("#tasks-table tr[data-state]")) >= 7)
        shot = tmp_path / "dashboard.png"
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        if os.environ.get("RUNTIME_DASHBOARD_SCREENSHOT"):  # refreshes docs/dashboard.png
            shutil.copy(shot, os.path.join(ROOT, "docs", "dashboard.png"))

        # A running task's stack: where its code is now.
        running_stack = '#tasks-table tr[data-name="wait_for"][data-state="RUNNING"] a.stack-link'
        wait.until(lambda _: click_first(running_stack))
        wait.until(lambda _: "in wait_for" in browser.find_element(By.ID, "log-view").text)
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)
        gate.touch()
    runtime.get(running)


def test_runtime_start_serves_the_dashboard_by_default(tmp_path: Any) -> None:
    env = {**os.environ, "RUNTIME_DASHBOARD_PORT": "0"}
    started = run_cli("start", "--head", "--port", "0", env=env)
    try:
        assert started.returncode == 0, started.stderr
        line = next(x for x in started.stdout.splitlines() if x.startswith("Dashboard: "))
        url = line.split()[1]
        request = urllib.request.Request(
            f"{url}/api/cluster", headers={"Authorization": f"Bearer {_standing_token()}"}
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert b"nodes" in reply.read()
        assert "prom_metrics_service_discovery.json" in started.stdout
    finally:
        stopped = run_cli("stop", env=env)
        assert stopped.returncode == 0, stopped.stderr


def _standing_token() -> str:
    with open(os.environ["RUNTIME_AUTH_TOKEN_PATH"]) as f:
        return f.read().strip()
