from msn_cli.cli import run

run()
