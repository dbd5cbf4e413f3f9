"""The default rule set shipped with dmdesk (``rules.yaml``)."""
