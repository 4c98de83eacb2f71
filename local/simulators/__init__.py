"""Local stand-ins for Google Meet, Microsoft Teams and Zoom that the browser bot is tested against.

server.py serves the platforms' pages (pages/) over HTTPS, voices.py the remote participants'
audio, control.py lets tests start a simulator and play the meeting's host.
"""
