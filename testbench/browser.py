"""Headless Chromium for the UI tests: loopback pages only, every process stopped by PID.

Debian's ``chromium`` and ``chromedriver`` (scripts/install.sh), driven by Selenium with explicit
paths, so that Selenium Manager never looks for (or downloads) a browser or a driver.
"""

from __future__ import annotations

import contextlib
import os
import signal

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from testbench._proc import process_table, wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Root needs --no-sandbox. The others stop what Chromium does on the network on its own (updates,
# sync, metrics, safe browsing, translation), use no proxy, and make every host name unresolvable:
# the tests load 127.0.0.1 URLs only, and no other name can even be looked up.
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--window-size=1280,1300",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
    "--metrics-recording-only",
    "--no-proxy-server",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)
# Bound on every wait for the UI (a React app that loads its data after the page).
WAIT = 60


def _descendants(pid: int) -> list[int]:
    table = process_table()
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        children = [child for child, ppid, _, _ in table if ppid == parent]
        found += children
        todo += children
    return found


def _alive(pids: list[int]) -> list[int]:
    live = {pid for pid, _, _, state in process_table() if state != "Z"}
    return [pid for pid in pids if pid in live]


@contextlib.contextmanager
def chromium(profile_dir: str):
    """Yield a Selenium driver of a headless Chromium; quit it and check that its processes are gone.

    :param profile_dir: Chromium's user data folder (a fresh one: no state from elsewhere).
    """
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile_dir}"):
        options.add_argument(flag)
    service = Service(CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        pids = [service.process.pid, *_descendants(service.process.pid)]
        driver.quit()
        try:
            wait_until(lambda: not _alive(pids), 30, "chromedriver and chromium to exit", 0.2)
        except TimeoutError:
            for pid in _alive(pids):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            raise


def until(driver, condition, what: str, timeout: float = WAIT):
    """``WebDriverWait(driver, timeout).until(condition)``; on timeout, print the page and say what was missing.

    :param condition: an ``expected_conditions`` callable.
    :param what: what was awaited, for the error.
    """
    try:
        return WebDriverWait(driver, timeout).until(condition)
    except TimeoutException:
        print(f"--- page source of {driver.current_url} ---\n{driver.page_source}\n--- end of page source ---")
        raise AssertionError(f"timed out after {timeout}s waiting for {what} (page source printed above)") from None


def login(driver, url: str, user: str, password: str) -> None:
    """Sign in through the simple auth manager's login page of the Airflow at ``url``."""
    driver.get(f"{url}/auth/login")
    until(driver, EC.element_to_be_clickable((By.NAME, "username")), "the login form").send_keys(user)
    driver.find_element(By.NAME, "password").send_keys(password)
    until(driver, EC.element_to_be_clickable((By.XPATH, "//button[@type='submit']")), "the Sign in button").click()
    until(driver, lambda d: "/auth/login" not in d.current_url, "the login to be accepted")
