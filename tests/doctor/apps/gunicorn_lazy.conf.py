# gunicorn config for fsa_mysql without preloading
wsgi_app = "fsa_mysql:app"
preload_app = False
workers = 3
