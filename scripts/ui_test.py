#!/usr/bin/env python3
"""The page in a real browser (headless Chromium via Selenium): load it, ask a question, wait for the streamed
reply and the conversation tokens, click a reply token, and find its explanation and its scores in the DOM.
Saves a screenshot. Usage: ui_test.py URL SCREENSHOT.png"""
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

url, shot = sys.argv[1], sys.argv[2]
opts = Options()
for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,860"):
    opts.add_argument(a)
opts.binary_location = "/usr/bin/chromium"
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
try:
    driver.get(url)
    wait = WebDriverWait(driver, 180, poll_frequency=0.2)
    wait.until(lambda d: d.find_element(By.ID, "models").text.strip() != "")
    q = driver.find_element(By.ID, "question")
    q.clear()
    q.send_keys("What is the capital of France?")
    mt = driver.find_element(By.ID, "maxTokens")
    mt.clear()
    mt.send_keys("12")
    driver.find_element(By.ID, "ask").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".tok.reply")) > 0)
    reply = driver.find_element(By.ID, "reply").text
    assert reply.strip(), "no reply text streamed into #reply"
    toks = driver.find_elements(By.CSS_SELECTOR, ".tok.reply")
    tok = toks[min(1, len(toks) - 1)]
    pos = tok.get_attribute("data-pos")
    tok.click()
    wait.until(lambda d: d.find_element(By.ID, "cos").text not in ("", "–"))
    explanation = driver.find_element(By.ID, "explanation").text
    mse, cos, fve = (driver.find_element(By.ID, k).text for k in ("mse_nrm", "cos", "fve_nrm"))
    assert explanation and not explanation.startswith("failed"), f"no explanation: {explanation!r}"
    float(mse), float(cos)
    assert fve == "no baseline" or float(fve) == float(fve), f"fve_nrm shows {fve!r}"
    bg = driver.find_element(By.CSS_SELECTOR, f'.tok[data-pos="{pos}"]').value_of_css_property("background-color")
    assert bg not in ("rgba(255, 255, 255, 1)", "rgb(255, 255, 255)"), f"clicked token not coloured by its score ({bg})"
    time.sleep(0.3)
    driver.save_screenshot(shot)
    print(f"ui: reply {reply!r}; token {pos}: mse_nrm {mse} cos {cos} fve_nrm {fve}; explanation {explanation[:80]!r}; screenshot {shot}")
finally:
    driver.quit()
