"""Default rule set and FAQ knowledge base shipped with dmdesk (``deploy/rules.yaml``)."""
