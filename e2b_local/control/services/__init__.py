"""Host services kept in the registry: lifecycle events and their webhooks, sandbox logs."""
