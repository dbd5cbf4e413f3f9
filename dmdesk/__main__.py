"""`python -m dmdesk` is the `dmdesk` command."""

from dmdesk.cli import main

main()
