"""`python -m services.responder` runs the responder service."""

from services.responder.app import main

main()
