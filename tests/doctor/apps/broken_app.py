"""An app whose import fails in the user's own code."""

from flask import Flask

app = Flask(__name__)
SETTINGS = {"db": "mysql"}
DATABASE_URL = SETTINGS["database_url"]  # FG-MARK: broken
