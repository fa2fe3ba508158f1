"""The `e2b-local` command's verbs beyond serving: sandboxes, diagnostics, the server's discovery."""
