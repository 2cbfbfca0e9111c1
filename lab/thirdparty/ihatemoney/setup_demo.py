"""``--setup`` for I Hate Money: build the app once, which runs its migrations (the app does
that itself in ``create_app``), then add its demo project through its own model API, as its
``/demo`` page would on the first visit. Run per cell, with that cell's environment."""

from __future__ import annotations

from ihatemoney.models import Project
from ihatemoney.run import create_app


def main() -> None:
    app = create_app()
    with app.app_context():
        if Project.query.get("demo") is None:
            Project.create_demo_project()
            print("created the demo project")


if __name__ == "__main__":
    main()
