"""The file API on the daemon's port: OpenAI-compatible transcriptions and upload jobs.

openai_compat.py - the request and response shapes (pure)
engines.py       - which DecodeEngine serves a request (the daemon's, or one loaded through the resolver)
runner.py        - one file through the same pipeline as `streamer transcribe`, cancellable
jobs.py          - jobs kept on disk so they survive a restart
http.py          - the aiohttp routes
"""
