"""The key-rotation watchdog: daemon, events, pipeline, verification, state, metrics, sd_notify."""
