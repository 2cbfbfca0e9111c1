# gunicorn config for fsa_mysql: preloaded, 4 workers, forkguard installed late (in each worker)
wsgi_app = "fsa_mysql:app"
preload_app = True
workers = 4
bind = "127.0.0.1:0"


def post_fork(server: object, worker: object) -> None:  # FG-MARK: post_fork
    import forkguard

    forkguard.install()
