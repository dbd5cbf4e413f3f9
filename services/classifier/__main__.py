"""`python -m services.classifier` runs the classifier service."""

from services.classifier.app import main

main()
