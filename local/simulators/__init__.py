"""Local stand-ins for Google Meet, Microsoft Teams and Zoom that the browser bot is tested against.

server.py serves the platforms' pages (pages/) and the control API over HTTPS, meetings.py
keeps each meeting's scenario and state, voices.py makes the remote participants' audio,
control.py lets tests start a simulator and play the meeting's host.
"""
