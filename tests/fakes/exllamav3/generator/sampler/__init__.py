from .presets import *  # noqa: F403
