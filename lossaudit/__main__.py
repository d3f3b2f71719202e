"""`python -m lossaudit` is the `lossaudit` command."""

import sys

from lossaudit.pipelines import cli

sys.exit(cli.main())
