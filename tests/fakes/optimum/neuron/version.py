__version__ = "0.4.5"

__sdk_version__ = "2.26.1"
