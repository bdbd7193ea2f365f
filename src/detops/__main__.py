from detops.cli import app

app()
