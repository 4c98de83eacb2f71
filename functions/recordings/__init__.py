"""Recordings: every audio chunk a meeting's bots send, kept, and assembled into one WAV file.

- `storage`: where the chunks are kept (a folder, or any S3-compatible bucket), under keys
  built so that no user id can reach outside its own prefix.
- `assembly`: the meeting's timeline (each chunk at its place on the meeting's clock, gaps as
  silence, overlaps heard once) read as a virtual WAV file, any byte range of it, one chunk in
  memory at a time.

Nothing here knows about HTTP or the database: the caller records which chunks exist
(`assembly.StoredChunk`) and serves the bytes.
"""
