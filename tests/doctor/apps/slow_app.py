"""An app whose import never finishes (waits for a server that does not answer)."""

import time

time.sleep(60)
app = None
