"""`python -m services.api` runs the api service."""

from services.api.app import main

main()
