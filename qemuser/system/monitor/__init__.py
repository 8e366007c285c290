"""The machine's monitors: QMP (JSON, for programs) and HMP (text, for people), over any chardev
stream, both driving the machine through the `MonitorTarget` protocol of target.py."""
