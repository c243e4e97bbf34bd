"""Running under a supervisor: the systemd notify protocol, the watchdog's progress policy,
configuration reload, and the test-only hooks that make a hang reproducible."""
