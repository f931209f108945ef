"""tiankong.tui: the typer CLI and the Textual playground."""
