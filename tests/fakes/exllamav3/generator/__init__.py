from .generator import Generator
from .job import Job

__all__ = ["Generator", "Job"]
