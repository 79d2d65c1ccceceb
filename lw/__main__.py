"""`python -m lw <command> key=value ...` is `lw <command> key=value ...`."""
from lw.cli import main

raise SystemExit(main())
