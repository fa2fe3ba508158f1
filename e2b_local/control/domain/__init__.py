"""Domain mode: the API at `https://api.<domain>` and every sandbox port at `https://<port>-<id>.<domain>`."""
