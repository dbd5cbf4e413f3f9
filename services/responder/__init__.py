"""Responder: answers DMs with chatbot rules or hands them to humans; sends replies out."""
