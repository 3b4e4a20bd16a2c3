"""``python -m llmcompare.study plan|run|report ...``."""

import sys

from llmcompare.study.cli import main

sys.exit(main())
