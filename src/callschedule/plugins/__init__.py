"""Built-in plugins, registered exactly as a third-party plugin would be."""

#: Modules registered on every scheduler's plugin manager, after entry-point plugins.
DEFAULT_PLUGINS = (
    "callschedule.plugins.memory",
    "callschedule.plugins.sqlite",
    "callschedule.plugins.postgres",
    "callschedule.plugins.auth",
    "callschedule.plugins.executors",
)
