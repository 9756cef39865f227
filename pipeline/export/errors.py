"""The error export and fetch raise for a bundle, checkpoint or weights file they cannot use."""

from pipeline.user_errors import UserError


class BundleExportError(UserError, ValueError):
    """A bundle that cannot be exported or completed; the message names the file and the fault in one line."""
