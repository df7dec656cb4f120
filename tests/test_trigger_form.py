"""The training DAG's trigger form, in a real browser: headless Chromium on a real Airflow's UI.

One stack and one signed-in browser for the module. Only ``ramp_train_<event>`` is unpaused (not
the loop), so every training here was started from the form. Screenshots go to each test's
tmp_path; ``RAMP_UPDATE_SCREENSHOTS=1`` also writes the filled form to docs/trigger-form.png (the
README's picture), which a normal run leaves alone.
"""

from __future__ import annotations

import os
import re
import shutil
import urllib.parse
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC

from ramp_airflow.dag_factory.run_form import TRAINING_RUN_PARAMS
from ramp_airflow.utils.dag_ids import training_dag_id
from testbench import browser
from testbench._proc import wait_until
from testbench.airflow_stack import USER, running_airflow
from testbench.event_config import write_event_config

# Stack start, then up to three trainings on two shared cores.
pytestmark = pytest.mark.timeout(1500)
TRAINING_TIMEOUT = 480
FINAL = {"scored", "training_error", "checking_error"}
README_PICTURE = Path(__file__).resolve().parent.parent / "docs" / "trigger-form.png"
DIALOG = "//*[@role='dialog' and @aria-modal='true' and @data-state='open']"


@pytest.fixture(scope="module")
def bench(tmp_path_factory, postgres, ramp_template, instance, ec2):
    """(stack, RAMP database, signed-in driver), the event's training DAG unpaused."""
    work = tmp_path_factory.mktemp("trigger-form")
    db = ramp_template.copy()
    try:
        config = write_event_config(work / "config.yml", db, instance, ec2)
        with running_airflow(postgres, str(config), extra_env=ec2.env, home=str(work / "airflow")) as stack:
            stack.unpause(training_dag_id(db.event))
            with browser.chromium(str(work / "chromium")) as driver:
                browser.login(driver, stack.url, USER, stack.password())
                yield stack, db, driver
    finally:
        db.drop()


def open_form(driver, url: str, dag_id: str):
    """Open the DAG's page, press Trigger; returns the form's dialog."""
    driver.get(f"{url}/dags/{urllib.parse.quote(dag_id)}")
    trigger = (By.CSS_SELECTOR, "button[aria-label='Trigger Dag']")
    browser.until(driver, EC.element_to_be_clickable(trigger), "the DAG page's Trigger button").click()
    browser.until(driver, EC.element_to_be_clickable((By.NAME, "element_submission_id")), "the trigger form")
    return driver.find_element(By.XPATH, DIALOG)


def fill(driver, values: dict) -> None:
    """Type each value into the form field of that param (the UI names it ``element_<param>``)."""
    for param, value in values.items():
        driver.find_element(By.NAME, f"element_{param}").send_keys(str(value))


def press_trigger(dialog) -> None:
    dialog.find_element(By.XPATH, ".//button[normalize-space()='Trigger']").click()


def triggered_run(driver, dag_id: str) -> str:
    """After a successful Trigger the UI opens the new run's page; its run id, from the address."""
    pattern = re.compile(rf"/dags/{re.escape(dag_id)}/runs/([^/?#]+)")
    browser.until(driver, lambda d: pattern.search(d.current_url), "the new run's page")
    return urllib.parse.unquote(pattern.search(driver.current_url).group(1))


def wait_final(stack, db, submission_id: int) -> str:
    """The submission's state once final (the RAMP database's word), bounded."""

    def final():
        stack.check_alive()
        [(state,)] = db.query("SELECT state FROM submissions WHERE id = %s", (submission_id,))
        return state if state in FINAL else None

    return wait_until(final, TRAINING_TIMEOUT, f"submission {submission_id} to be trained", 2.0)


def conf_of(stack, dag_id: str, run_id: str) -> dict:
    [run] = [r for r in stack.dag_runs(dag_id) if r["dag_run_id"] == run_id]
    return run["conf"]


def test_submission_id_in_the_form_trains_it(bench, tmp_path):
    stack, db, driver = bench
    dag_id = training_dag_id(db.event)
    submission_id = db.submissions["random_forest"]
    dialog = open_form(driver, stack.url, dag_id)
    # Flat scalar fields, each with the title and the description an organiser reads.
    for param in TRAINING_RUN_PARAMS.values():
        assert param.schema["title"] in dialog.text and param.description in dialog.text
    fill(driver, {"submission_id": submission_id})
    dialog.screenshot(str(tmp_path / "filled-form.png"))
    if os.environ.get("RAMP_UPDATE_SCREENSHOTS") == "1":
        README_PICTURE.parent.mkdir(exist_ok=True)
        shutil.copyfile(tmp_path / "filled-form.png", README_PICTURE)
    press_trigger(dialog)
    run_id = triggered_run(driver, dag_id)
    assert conf_of(stack, dag_id, run_id)["submission_id"] == submission_id
    assert wait_final(stack, db, submission_id) == "scored"
    driver.save_screenshot(str(tmp_path / "run-page.png"))


def test_team_and_name_in_the_form_train_that_submission(bench, tmp_path):
    stack, db, driver = bench
    dag_id = training_dag_id(db.event)
    # The bench's hostile name: typed into the browser, it must reach the database as it is.
    name = "x;touch PWNED$(id)"
    [row] = [r for r in db.rows if r["name"] == name]
    dialog = open_form(driver, stack.url, dag_id)
    fill(driver, {"team": row["team"], "name": name})
    dialog.screenshot(str(tmp_path / "filled-form.png"))
    press_trigger(dialog)
    run_id = triggered_run(driver, dag_id)
    conf = conf_of(stack, dag_id, run_id)
    assert (conf["team"], conf["name"], conf.get("submission_id")) == (row["team"], name, None)
    assert wait_final(stack, db, row["id"]) == "scored"


def test_a_bad_value_shows_the_forms_error_and_creates_no_run(bench, tmp_path):
    stack, db, driver = bench
    dag_id = training_dag_id(db.event)
    runs_before = len(stack.dag_runs(dag_id))
    dialog = open_form(driver, stack.url, dag_id)
    # The id field is a number input: text typed into it is refused as it is typed.
    field = driver.find_element(By.NAME, "element_submission_id")
    field.send_keys("abc")
    assert field.get_attribute("value") == ""
    # Text can still be given in the run's JSON (Advanced Options); the form sends it and shows
    # Airflow's validation of the param's schema.
    dialog.find_element(By.XPATH, ".//button[contains(@id, ':trigger:advancedOptions')]").click()
    editor = browser.until(
        driver, lambda d: dialog.find_element(By.CSS_SELECTOR, ".monaco-editor .view-lines"), "the JSON editor"
    )
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", editor)
    editor.click()
    typing = driver.switch_to.active_element
    typing.send_keys(Keys.CONTROL, "a")
    typing.send_keys('{"submission_id": "7"}')
    # The editor closes brackets and quotes as they are typed: drop whatever it added after the cursor.
    typing.send_keys(Keys.SHIFT, Keys.CONTROL, Keys.END)
    typing.send_keys(Keys.DELETE)
    assert re.sub(r"\s", "", editor.text) == '{"submission_id":"7"}'
    press_trigger(dialog)
    error = "Invalid input for param submission_id: '7' is not of type 'null', 'integer'"
    browser.until(driver, EC.text_to_be_present_in_element((By.XPATH, DIALOG), error), "the form's error")
    dialog.screenshot(str(tmp_path / "form-error.png"))
    assert len(stack.dag_runs(dag_id)) == runs_before
