"""Networks the bundle configs declare as ``network_def``."""
