"""Meeting platforms in a real browser: Chromium, driven by Playwright, joins as a guest.

    spec.py       a platform's data file (selectors and texts), loaded and checked
    adapters.py   the join and leave flows, one adapter per platform behind one interface
    capture.js    injected into the page: remote audio, speaker indicators, state probes
    speakers.py   speaker indicator changes -> speaker turns
    autoleave.py  when a bot leaves on its own
    source.py     all of it as the bot's AudioSource
"""
