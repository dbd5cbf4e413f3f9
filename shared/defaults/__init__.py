"""The default rule set shipped with dmdesk (``deploy/rules.yaml``; a test keeps them identical)."""
