"""`mover ui` in a real browser: headless Chromium from Debian's packages, driven by Selenium
through Debian's chromedriver, against the emulator with the real controller and node agent.

Every page loads without a console error (a script error, a resource refused by the
Content-Security-Policy, a failed request), a backup started from the page completes and its
progress is shown, a restore made with the wizard completes, and a user without permission on
a namespace does not see it. Each page is saved as a screenshot: into $MOVER_UI_SCREENSHOTS
when set (docs/images holds a few), else the test's temporary directory.

Without chromium and chromedriver these tests skip and say how to get them; under CI=true
they fail instead (.ci/run installs both).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from mover_k8s import api
from mover_k8s.ui.access import ClusterAccess, LocalAccess

from .conftest import SYSTEM, Env, app_manifests, backup_body, read_bytes, volume_path
from .ui_support import HeldVolume, app_with_backup, serve

CHROMIUM = os.environ.get("MOVER_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("MOVER_CHROMEDRIVER", "/usr/bin/chromedriver")
WAIT = 90  # seconds a condition may take (2 shared cores)

pytestmark = pytest.mark.slow  # ~30 s: runs in CI (CI=true) and with -m slow


def _tools() -> tuple[str, str] | None:
    chromium = shutil.which(CHROMIUM) or (CHROMIUM if os.access(CHROMIUM, os.X_OK) else None)
    driver = shutil.which(CHROMEDRIVER) or (
        CHROMEDRIVER if os.access(CHROMEDRIVER, os.X_OK) else None
    )
    return (chromium, driver) if chromium and driver else None


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    tools = _tools()
    if tools is None:
        message = (
            f"needs chromium and chromedriver ({CHROMIUM}, {CHROMEDRIVER}): "
            "apt-get install chromium chromium-driver"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true: {message}", pytrace=False)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = tools[0]
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in containers; the pages are our own
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        "--disable-gpu",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(tools[1]), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("MOVER_UI_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def console_errors(driver: WebDriver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def visit(driver: WebDriver, url: str, shots: Path, name: str) -> None:
    """Open a page, wait for it, check its console, save its screenshot."""
    driver.get(url)
    WebDriverWait(driver, WAIT).until(
        lambda d: d.execute_script("return document.readyState") == "complete"
    )
    assert console_errors(driver) == [], f"{url}: console errors"
    driver.save_screenshot(str(shots / f"{name}.png"))


def wait_text(driver: WebDriver, css: str, text: str) -> None:
    try:
        WebDriverWait(driver, WAIT).until(
            expected_conditions.text_to_be_present_in_element((By.CSS_SELECTOR, css), text)
        )
    except TimeoutException:
        body = driver.find_element(By.TAG_NAME, "main").text
        raise AssertionError(
            f"{driver.current_url}: no {text!r} in {css}; the page says:\n{body[:2000]}"
        ) from None


def test_pages_backup_and_restore_in_a_browser(
    env: Env, browser: WebDriver, shots: Path, tmp_path: Path
) -> None:
    with env.running():
        data = app_with_backup(env)
        with serve(LocalAccess(env.kube)) as served:
            url = served.url
            visit(browser, f"{url}/?secret={served.dashboard.secret}", shots, "applications")
            rows = browser.find_elements(By.CSS_SELECTOR, "#apps tr[data-app]")
            assert [r.get_attribute("data-app") for r in rows] == ["other", "shop"]
            visit(browser, f"{url}/apps/shop", shots, "application")
            visit(browser, f"{url}/backups/first", shots, "restore-point")
            assert (
                browser.find_element(By.ID, "root-hash").text
                == (env.kube.get(api.BACKUP, SYSTEM, "first")["status"]["rootHash"])
            )
            browser.find_element(By.ID, "verify").click()
            wait_text(browser, "#verified", "verified")
            assert console_errors(browser) == []

            # A backup from the page: the progress section follows it while it runs (one
            # volume's data held back) and until it completes.
            held = HeldVolume(env, "shop", "data-b", data["data-b"])
            visit(browser, f"{url}/apps/shop", shots, "application")
            browser.find_element(By.ID, "backup-now").click()
            WebDriverWait(browser, WAIT).until(expected_conditions.url_contains("/backups/ui-"))
            name = browser.current_url.rsplit("/", 1)[1]
            wait_text(browser, "#live [data-field=volumes]", "1 of 2 volumes done")
            wait_text(browser, "#live [data-field=summary]", "3.0 MiB of 6.0 MiB")
            wait_text(browser, "#live tr[data-volume='1'] [data-field=phase]", "Running")
            total = browser.find_element(By.CSS_SELECTOR, "#live > p progress")
            assert total.get_attribute("value") == "50"
            assert console_errors(browser) == []
            browser.save_screenshot(str(shots / "backup-running.png"))
            held.release()
            wait_text(browser, "#live [data-field=phase]", "Completed")
            wait_text(browser, "#live [data-field=volumes]", "2 of 2 volumes done")
            wait_text(browser, "#live [data-field=summary]", "6.0 MiB of 6.0 MiB")
            bars = browser.find_elements(By.CSS_SELECTOR, "#live tr[data-volume] progress")
            assert [b.get_attribute("value") for b in bars] == ["100", "100"]
            assert console_errors(browser) == []
            browser.save_screenshot(str(shots / "backup-progress.png"))
            visit(browser, f"{url}/running", shots, "running")
            assert name in browser.find_element(By.ID, "running").text

            # The wizard: map the namespace, preview (nothing written), restore.
            visit(browser, f"{url}/restore?backup={name}", shots, "restore-wizard")
            target = browser.find_element(By.CSS_SELECTOR, "input[data-namespace=shop]")
            target.clear()
            target.send_keys("shop3")
            browser.find_element(By.ID, "preview-button").click()
            wait_text(browser, "#preview-counts", "to create")
            assert console_errors(browser) == []
            assert env.kube.find(api.NAMESPACE, None, "shop3") is None
            browser.find_element(By.ID, "preview").location_once_scrolled_into_view  # noqa: B018
            browser.save_screenshot(str(shots / "restore-preview.png"))
            browser.find_element(By.ID, "restore-button").click()
            WebDriverWait(browser, WAIT).until(expected_conditions.url_contains("/restores/"))
            wait_text(browser, "#live [data-field=phase]", "Completed")
            assert console_errors(browser) == []
            browser.save_screenshot(str(shots / "restore.png"))
            assert read_bytes(volume_path(env.kube, "shop3", "data-b")) == data["data-b"]

            git = tmp_path / "git"
            git.mkdir()
            for _rt, body in app_manifests("shop"):
                if body["kind"] == "Deployment":
                    body["spec"]["template"]["spec"]["containers"][0]["image"] = "shop:1.1"
                if body["kind"] != "Widget":
                    named = f"{body['kind']}-{body['metadata']['name']}.yaml"
                    (git / named).write_text(json.dumps(body))
            visit(browser, f"{url}/backups/{name}/drift?desired={git}", shots, "drift")
            assert "shop:1.1" in browser.find_element(By.ID, "drift").text

            visit(browser, f"{url}/repositories", shots, "repositories")
            assert "node-a" in browser.find_element(By.ID, "agents").text


def test_a_user_does_not_see_a_namespace_without_permission(
    env: Env, browser: WebDriver, shots: Path
) -> None:
    cluster = env.served.cluster
    cluster.tokens["alice-token"] = {"username": "alice", "groups": ["shop-team"]}
    cluster.grant("group:shop-team", ["get"], ["backups.mover.dev"], ["shop"])
    with env.running():
        app_with_backup(env)
        env.kube.create(api.BACKUP, backup_body("of-other", includedNamespaces=["other"]))
        env.wait_phase(api.BACKUP, "of-other")
        with serve(ClusterAccess(env.kube)) as served:
            browser.get(f"{served.url}/signin")
            browser.find_element(By.NAME, "token").send_keys("alice-token")
            browser.find_element(By.CSS_SELECTOR, "form button").click()
            WebDriverWait(browser, WAIT).until(
                expected_conditions.presence_of_element_located((By.ID, "apps"))
            )
            assert console_errors(browser) == []
            browser.save_screenshot(str(shots / "applications-as-alice.png"))
            rows = browser.find_elements(By.CSS_SELECTOR, "#apps tr[data-app]")
            assert [r.get_attribute("data-app") for r in rows] == ["shop"]
            assert "other" not in browser.find_element(By.ID, "apps").text
            browser.get(f"{served.url}/backups/of-other")
            assert "404" in browser.find_element(By.TAG_NAME, "h1").text
            # Alice may see shop but not back it up: no button.
            browser.get(f"{served.url}/apps/shop")
            assert browser.find_elements(By.ID, "backup-now") == []
