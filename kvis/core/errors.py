"""The one exception kvis raises for user mistakes; the CLI turns it into a one-line message."""


class KvisError(ValueError):
    """Bad input from the user: a missing file, an unknown layer, an unusable model."""
