"""A gunicorn.conf.py that calls ``forkguard.install()`` before the app (Django) is imported.

    gunicorn -c tests/integrations/apps/fg_placement_gunicorn_conf.py --preload ...

gunicorn runs this file in the master before it loads (``--preload``) the WSGI app, so Django is
not imported yet. FG_PLACEMENT_INSTALL=0 leaves forkguard out (the twin). Not FG_GUARD: that one
puts forkguard.django in the fixture project's INSTALLED_APPS, which this placement must not need.
"""

import os
import sys

if os.environ.get("FG_PLACEMENT_INSTALL") == "1":
    import forkguard

    print(
        f"fg_placement: install() with django imported: {'django' in sys.modules}",
        file=sys.stderr,
        flush=True,
    )
    forkguard.install()
