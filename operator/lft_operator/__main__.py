"""`python -m lft_operator`: run the operator (see main.py for flags and settings)."""

import sys

from .main import main

sys.exit(main())
