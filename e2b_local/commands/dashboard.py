"""`e2b-local dashboard`: a one-time login link to the running server's web dashboard."""

from __future__ import annotations

import click

from e2b_local.commands.client import Api, CliError
from e2b_local.commands.sandboxes import _paths


@click.command("dashboard")
@click.option("--open", "open_browser", is_flag=True, help="open the link in the default browser too")
def dashboard(open_browser: bool) -> int:
    """Print a link that logs a browser into the dashboard once (valid 10 minutes), then is void."""
    api = Api(_paths())
    response = api.request("POST", "/dashboard/links", ok=(201,))
    path = response.json().get("path")
    if not isinstance(path, str):
        raise CliError("the server did not return a dashboard link")
    link = api.running.url + path
    click.echo(link)
    if open_browser:
        click.launch(link)
    return 0
