"""API: the single writer of the queue database and the REST API other systems call."""
