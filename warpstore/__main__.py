"""``python -m warpstore``: the same as the ``warpstore`` command."""

from warpstore.cli import cli

if __name__ == "__main__":
    cli(prog_name="warpstore")
