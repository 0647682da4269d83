"""`python -m tools`: the workbook's maintenance command line (see `tools.workbook`)."""

import sys

from tools.workbook import main

sys.exit(main())
