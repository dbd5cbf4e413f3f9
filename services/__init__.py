"""The four dmdesk stages, one package each: ingest, classifier, responder, api."""
