"""OBS Studio bridge: captions from the daemon into a Text source and native stream captions.

`protocol` is obs-websocket v5 without I/O (authentication, messages, status codes), `captions`
the caption state a follower keeps (protocol 2), `bridge` the asyncio program that connects both
sides (`streamer obs`).
"""
