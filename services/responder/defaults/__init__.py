"""The FAQ knowledge base and the evaluation sets shipped with dmdesk (the default rule set is
``shared/defaults/rules.yaml``)."""
