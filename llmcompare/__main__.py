import sys

from llmcompare.cli import main

sys.exit(main())
