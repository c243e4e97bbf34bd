"""Caption delivery: everything between the Bus and the outside world.

`start.start_sinks` starts, on the running asyncio loop, the WebSocket/HTTP server (server.py),
the MQTT publisher (mqtt.py) and the transcript writer (files.py), each given a
`context.SinkContext`; the console (console.py) is the daemon's own. This package's `__init__`
imports nothing, so that importing one sink module (formats.py, say) loads only what it needs.
"""
