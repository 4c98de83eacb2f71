"""The simulated-meeting scene (tests/browser/test_browser_bot.py) for every browser test."""
from tests.browser.test_browser_bot import scene  # noqa: F401 (a fixture)
