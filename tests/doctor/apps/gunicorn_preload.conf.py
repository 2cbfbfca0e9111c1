# gunicorn config for fsa_mysql: preloaded, 4 workers
wsgi_app = "fsa_mysql:app"
preload_app = True
workers = 4
bind = "127.0.0.1:0"
