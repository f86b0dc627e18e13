from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("book-order-monitor")
except PackageNotFoundError:  # running from a checkout, as run_monitor.py usually does
    __version__ = "0.1.0"
