"""The error export and fetch raise for a bundle, checkpoint or weights file they cannot use."""


class BundleExportError(ValueError):
    """A bundle that cannot be exported or completed; the message names the file and the fault in one line."""
