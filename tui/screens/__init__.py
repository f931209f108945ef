"""The playground's screens: chat (the main one), help, the preset editor and the tokens view."""
