class ConfigError(ValueError):
    """A config or input that cannot work; the message names the key, the value and what is allowed."""

    def __init__(self, key: str, value: object, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r}: {allowed}")

    def __reduce__(self):
        """Pickle by its three fields: a sweep job's error travels back from a joblib worker, and
        the console script still knows it for a config error (exit 2, one line)."""
        return type(self), (self.key, self.value, self.allowed)
