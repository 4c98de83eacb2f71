"""The meeting bot: captures a meeting's audio and sends it out in chunks."""
