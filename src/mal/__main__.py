"""`python -m mal` is the same as the `mal` command."""

import sys

from mal.cli import main

sys.exit(main())
