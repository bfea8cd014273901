"""Redraws docs/console.png, the README's picture of the console: a fleet, sqlq-web, a few
queries run as alice in headless Chromium. Not a test. Needs the fixture's broker:
  tests/support/broker-fixture.sh start build/test-broker
  /usr/bin/python3 tests/web/screenshot.py
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from browser_test import Browser  # noqa: E402
from webenv import WebEnv, slow_query  # noqa: E402

env = WebEnv(workers=2)
try:
    env.start_fleet()
    env.start_web()
    b = Browser(env)
    try:
        b.sign_in("alice")
        b.run("SELECT * FROM no_such_table")
        b.wait_status("failed")
        b.run(slow_query(60))
        b.wait_status("running")
        b.by_id("detail-stop").click()
        b.wait_status("cancelled")
        b.run(slow_query(60))
        b.wait_status("running")
        b.run("SELECT c.country, count(*) AS orders, round(sum(o.amount), 2) AS revenue, NULL AS note\n"
              "FROM orders o JOIN customers c ON c.id = o.customer_id GROUP BY 1 ORDER BY 3 DESC")
        b.wait_status("succeeded")
        b.until(lambda: b.by_id("result").is_displayed())
        out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../docs/console.png")
        b.d.set_window_size(1300, 700)
        b.d.save_screenshot(out)
        print("wrote", os.path.normpath(out))
    finally:
        b.quit()
finally:
    env.close()
