"""The ``dmdesk`` command: run one service, the whole local stack, or a tool."""
