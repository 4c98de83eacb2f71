"""Meeting platforms in a real browser: Chromium, driven by Playwright, joins as a guest.

    chromium.py   the browser: headful on its own Xvfb display, with no automation tells
    spec.py       a platform's data file (probes, each with where it was seen), loaded and checked
    probes.js     the one reader of probes: Playwright's "probe=" selector engine, and capture.js's
    adapters.py   the join and leave flows, one adapter per platform behind one interface
    capture.js    injected into the page: remote audio, speaker indicators, state probes
    speakers.py   speaker indicator changes -> speaker turns
    autoleave.py  when a bot leaves on its own
    (bot/sources/browser.py puts all of it together as the bot's AudioSource)
"""
