"""The single exception type of the cdi package."""


class CDIError(ValueError):
    """A CDI spec, name or spec file is invalid, or a spec file could not be written.

    ``field`` is the JSON path of the offending value (e.g. ``devices[1].name``) when there is one;
    the message then starts with it so logs and API errors say exactly what to fix.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        self.field = field
        self.reason = message
        super().__init__(f"{field}: {message}" if field else message)
