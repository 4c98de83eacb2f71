"""Meeting platforms in a real browser: Chromium, driven by Playwright, joins as a guest.

    spec.py       a platform's data file (selectors and texts), loaded and checked
    adapters.py   the join and leave flows, one adapter per platform behind one interface
    capture.js    injected into the page: remote audio, speaker indicators, state probes
    speakers.py   speaker indicator changes -> speaker turns
    autoleave.py  when a bot leaves on its own
    (bot/sources/browser.py puts all of it together as the bot's AudioSource)
"""
